#include "model/synth_tokenizer.h"

#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/error.h"

namespace lq::model {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp, "cannot create");
    out.write(content.data(), std::streamsize(content.size()));
    if (!out.flush()) fail(tmp, "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    fail(path, "rename failed: " + ec.message());
  }
}

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(p.string(), "cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

json parse_json(const fs::path& p) {
  try {
    return json::parse(read_file(p));
  } catch (const json::exception& e) {
    fail(p.string(), std::string("not valid JSON: ") + e.what());
  }
}

void note_token(TokenizerFiles& t, const std::string& content, int id) {
  t.size = std::max(t.size, id + 1);
  for (const auto& s : kLanceSpecialTokens)
    if (s == content) t.special_ids[s] = id;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards. Returns the
// symbol of every byte and the byte order that defines ids 0..255 (printable ranges first).
struct ByteSymbols {
  std::array<std::string, 256> symbol;
  std::vector<int> id_order;
};
ByteSymbols bytes_to_unicode() {
  ByteSymbols b;
  std::set<int> printable;
  for (int c = '!'; c <= '~'; ++c) printable.insert(c);
  for (int c = 0xA1; c <= 0xAC; ++c) printable.insert(c);
  for (int c = 0xAE; c <= 0xFF; ++c) printable.insert(c);
  for (int c : printable) {
    b.symbol[size_t(c)] = utf8(uint32_t(c));
    b.id_order.push_back(c);
  }
  uint32_t next = 256;
  for (int c = 0; c < 256; ++c)
    if (!printable.count(c)) {
      b.symbol[size_t(c)] = utf8(next++);
      b.id_order.push_back(c);
    }
  return b;
}

// Built-in training text (written for this project): plain English about everyday things.
constexpr const char* kBpeText =
    "The quick brown fox jumps over the lazy dog while the children watch from the garden. "
    "Once upon a time there was a little girl who lived in a small house near the river. "
    "She liked to read books about the stars, the sea and the mountains, and every evening she "
    "walked with her mother along the water to see the boats come home. The people of the town "
    "were kind and they often shared their bread and their stories. In the morning the sun rose "
    "over the hills and the birds started to sing in the trees. A red ball rolled under the table, "
    "and the dog ran after it. Two blue squares and a green circle are drawn on a white background. "
    "The model reads the text, thinks about the question and then writes a short answer. "
    "There is a yellow triangle at the top of the picture and a large black circle below it. "
    "Numbers such as 1, 2, 3, 10 and 2024 appear in the data, together with names like Anna, Tom and Lily. "
    "We want the tokenizer to learn common pieces of words: the, and, ing, tion, er, re, in, on, at, "
    "so that the sentences of the tests become shorter sequences of tokens. It is what it is. "
    "They said that the weather would be better tomorrow, but nobody believed them.";

// GPT-2-like pre-tokenization, simplified: an optional leading space plus a run of letters, a run of
// digits, or a single other byte. Words are returned as sequences of byte symbols with counts.
std::map<std::vector<std::string>, int> word_counts(const ByteSymbols& b) {
  std::map<std::vector<std::string>, int> counts;
  const std::string text = kBpeText;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    if (text[j] == ' ' && j + 1 < text.size()) ++j;
    auto cls = [](unsigned char ch) { return std::isalpha(ch) ? 1 : std::isdigit(ch) ? 2 : 0; };
    const int c = cls((unsigned char)text[j]);
    size_t k = j + 1;
    if (c != 0)
      while (k < text.size() && cls((unsigned char)text[k]) == c) ++k;
    std::vector<std::string> word;
    for (size_t p = i; p < k; ++p) word.push_back(b.symbol[(unsigned char)text[p]]);
    ++counts[word];
    i = k;
  }
  return counts;
}

// Standard BPE training: repeatedly merge the most frequent adjacent pair (ties broken by the pair's
// text, for determinism), skipping pairs whose concatenation is already a token.
std::vector<std::pair<std::string, std::string>> learn_merges(const ByteSymbols& b, int num_merges,
                                                             std::set<std::string>& tokens) {
  std::vector<std::pair<std::vector<std::string>, int>> words;
  for (auto& [w, n] : word_counts(b)) words.push_back({w, n});
  std::vector<std::pair<std::string, std::string>> merges;
  while (int(merges.size()) < num_merges) {
    std::map<std::pair<std::string, std::string>, int> pairs;
    for (const auto& [w, n] : words)
      for (size_t i = 0; i + 1 < w.size(); ++i) pairs[{w[i], w[i + 1]}] += n;
    const std::pair<std::string, std::string>* best = nullptr;
    int best_n = 0;
    for (const auto& [p, n] : pairs)
      if (n > best_n && !tokens.count(p.first + p.second)) best = &p, best_n = n;
    if (!best) break;
    const auto merge = *best;
    merges.push_back(merge);
    tokens.insert(merge.first + merge.second);
    for (auto& [w, n] : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == merge.first && w[i + 1] == merge.second) {
          out.push_back(merge.first + merge.second);
          ++i;
        } else {
          out.push_back(w[i]);
        }
      }
      w = std::move(out);
    }
  }
  return merges;
}

json added_token_entry(const std::string& content) {
  return {{"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false},
          {"single_word", false}, {"special", true}};
}

std::string tokenizer_config(const TokenizerFiles& t) {
  json decoder = json::object();
  for (const auto& s : kLanceSpecialTokens) decoder[std::to_string(t.special_ids.at(s))] = added_token_entry(s);
  json additional = json::array();
  for (size_t i = 1; i < kLanceSpecialTokens.size(); ++i) additional.push_back(kLanceSpecialTokens[i]);
  json c = {{"add_bos_token", false},
            {"add_prefix_space", false},
            {"added_tokens_decoder", decoder},
            {"additional_special_tokens", additional},
            {"bos_token", nullptr},
            {"clean_up_tokenization_spaces", false},
            {"eos_token", "<|im_end|>"},
            {"errors", "replace"},
            {"model_max_length", 32768},
            {"pad_token", "<|endoftext|>"},
            {"split_special_tokens", false},
            {"tokenizer_class", "Qwen2Tokenizer"},
            {"unk_token", nullptr}};
  return c.dump(2) + "\n";
}

}  // namespace

TokenizerFiles copy_tokenizer(const std::string& src_dir, const std::string& out_dir) {
  TokenizerFiles t;
  const fs::path src(src_dir);
  if (!fs::is_directory(src)) fail(src_dir, "tokenizer directory not found");
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"}) {
    if (!fs::exists(src / name)) continue;
    write_file_atomic((fs::path(out_dir) / name).string(), read_file(src / name));
    t.files.push_back(name);
  }
  // Size and special ids: tokenizer.json (model.vocab + added_tokens) or vocab.json + added_tokens_decoder.
  if (fs::exists(src / "tokenizer.json")) {
    const json j = parse_json(src / "tokenizer.json");
    if (j.contains("model") && j["model"].contains("vocab"))
      for (auto& [tok, id] : j["model"]["vocab"].items()) note_token(t, tok, id.get<int>());
    if (j.contains("added_tokens"))
      for (const auto& a : j["added_tokens"]) note_token(t, a.value("content", std::string()), a.value("id", 0));
  } else if (fs::exists(src / "vocab.json")) {
    const json vocab = parse_json(src / "vocab.json");  // named: items() of a temporary would dangle
    for (auto& [tok, id] : vocab.items()) note_token(t, tok, id.get<int>());
  } else {
    fail(src_dir, "no tokenizer.json or vocab.json in the tokenizer directory");
  }
  if (fs::exists(src / "tokenizer_config.json")) {
    const json c = parse_json(src / "tokenizer_config.json");
    if (c.contains("added_tokens_decoder"))
      for (auto& [id, a] : c["added_tokens_decoder"].items()) note_token(t, a.value("content", std::string()), std::stoi(id));
  }
  return t;
}

TokenizerFiles write_small_bpe(const std::string& out_dir, int num_merges) {
  const ByteSymbols b = bytes_to_unicode();
  std::set<std::string> tokens;
  json vocab = json::object();
  int next_id = 0;
  for (int byte : b.id_order) {
    vocab[b.symbol[size_t(byte)]] = next_id++;
    tokens.insert(b.symbol[size_t(byte)]);
  }
  const auto merges = learn_merges(b, num_merges, tokens);
  std::string merges_txt = "#version: 0.2\n";
  for (const auto& [l, r] : merges) {
    vocab[l + r] = next_id++;
    merges_txt += l + " " + r + "\n";
  }
  TokenizerFiles t;
  for (const auto& s : kLanceSpecialTokens) t.special_ids[s] = next_id++;
  t.size = next_id;
  const fs::path out(out_dir);
  write_file_atomic((out / "vocab.json").string(), vocab.dump() + "\n");
  write_file_atomic((out / "merges.txt").string(), merges_txt);
  write_file_atomic((out / "tokenizer_config.json").string(), tokenizer_config(t));
  t.files = {"vocab.json", "merges.txt", "tokenizer_config.json"};
  return t;
}

}  // namespace lq::model
