#include "tokenizer/tokenizer_files.h"

#include <climits>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/error.h"
#include "io/model_files.h"
#include "tokenizer/pretokenizer.h"

namespace lq::tok {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file.string(), "cannot open for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json read_json(const fs::path& file) {
  try {
    return json::parse(read_text(file));
  } catch (const json::parse_error& e) {
    fail(file.string(), std::string("malformed JSON: ") + e.what());
  }
}

// Splits "left right" at its single space; HF rejects other shapes, and so do we.
std::pair<std::string, std::string> parse_merge_line(const std::string& line, const std::string& where) {
  const size_t space = line.find(' ');
  if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
      line.find(' ', space + 1) != std::string::npos)
    fail(where, "a merge must be two tokens separated by one space, got '" + line + "'");
  return {line.substr(0, space), line.substr(space + 1)};
}

AddedToken parse_added_token(const json& j, int32_t id) {
  AddedToken t;
  t.id = id;
  t.content = j.at("content").get<std::string>();
  t.special = j.value("special", false);
  // HF's default: special tokens match the raw text, other added tokens the normalised text.
  t.normalized = j.value("normalized", !t.special);
  t.lstrip = j.value("lstrip", false);
  t.rstrip = j.value("rstrip", false);
  t.single_word = j.value("single_word", false);
  return t;
}

// True for NFC, false for none; anything else is unsupported.
bool uses_nfc(const json& normalizer, const std::string& where) {
  if (normalizer.is_null()) return false;
  if (normalizer.value("type", "") != "NFC")
    fail(where, "unsupported normalizer '" + normalizer.dump() + "' (only NFC or null)");
  return true;
}

// Accepts Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)], the Qwen2 shape.
std::string regex_of_pre_tokenizer(const json& pre, const std::string& where) {
  const auto unsupported = [&] {
    fail(where, "unsupported pre_tokenizer (expected Sequence[Split regex Isolated, ByteLevel use_regex=false]): " +
                    pre.dump().substr(0, 300));
  };
  if (!pre.is_object() || pre.value("type", "") != "Sequence") unsupported();
  const json& steps = pre.at("pretokenizers");
  if (!steps.is_array() || steps.size() != 2) unsupported();
  const json& split = steps[0];
  const json& byte_level = steps[1];
  if (split.value("type", "") != "Split" || split.value("behavior", "") != "Isolated" ||
      split.value("invert", false) || !split.contains("pattern") || !split["pattern"].contains("Regex"))
    unsupported();
  if (byte_level.value("type", "") != "ByteLevel" || byte_level.value("use_regex", true) ||
      byte_level.value("add_prefix_space", false))
    unsupported();
  return split["pattern"]["Regex"].get<std::string>();
}

void check_bpe_model(const json& model, const std::string& where) {
  if (model.value("type", "BPE") != "BPE") fail(where, "model.type must be BPE");
  const auto nonempty = [&](const char* key) {
    return model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty();
  };
  if (nonempty("continuing_subword_prefix") || nonempty("end_of_word_suffix"))
    fail(where, "BPE subword prefixes/suffixes are not supported");
  if (model.value("byte_fallback", false)) fail(where, "BPE byte_fallback is not supported");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() > 0)
    fail(where, "BPE dropout is not supported");
}

// A token id: an integer in [0, 2^31) (a larger or fractional value is an error, never truncated).
int32_t token_id(const json& v, const std::string& what) {
  if ((v.is_number_integer() || v.is_number_unsigned()) && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX &&
      !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT32_MAX)))
    return int32_t(v.get<int64_t>());
  throw std::invalid_argument(what + " must be a token id (an integer in [0, 2^31)), got " + v.dump().substr(0, 40));
}

void read_vocab_object(const json& vocab, TokenizerSpec& spec) {
  if (!vocab.is_object()) throw std::invalid_argument("the vocabulary is not a JSON object");
  spec.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) spec.vocab.emplace_back(it.key(), token_id(it.value(), "vocabulary entry"));
}

TokenizerSpec read_tokenizer_json(const fs::path& file) {
  const std::string where = file.string();
  const json root = read_json(file);
  TokenizerSpec spec;
  spec.source = where;
  try {
    spec.nfc = uses_nfc(root.at("normalizer"), where);
    spec.pattern = regex_of_pre_tokenizer(root.at("pre_tokenizer"), where);
    const json& model = root.at("model");
    check_bpe_model(model, where);
    spec.ignore_merges = model.value("ignore_merges", false);
    read_vocab_object(model.at("vocab"), spec);
    for (const json& merge : model.at("merges")) {
      if (merge.is_string())  // older files: "left right"
        spec.merges.push_back(parse_merge_line(merge.get<std::string>(), where));
      else if (merge.is_array() && merge.size() == 2)  // tokenizers >= 0.20: ["left", "right"]
        spec.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      else
        fail(where, "model.merges entry must be \"a b\" or [a, b], got " + merge.dump());
    }
    const auto added_tokens = root.find("added_tokens");
    if (added_tokens != root.end())
      for (const json& added : *added_tokens)
        spec.added.push_back(parse_added_token(added, token_id(added.at("id"), "added_tokens id")));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // nlohmann type/key errors and our own shape checks
    fail(where, std::string("unexpected tokenizer.json structure: ") + e.what());
  }
  return spec;
}

TokenizerSpec read_vocab_and_merges(const fs::path& dir) {
  TokenizerSpec spec;
  spec.source = dir.string();
  spec.pattern = kQwen2Pattern;
  const fs::path vocab_file = dir / "vocab.json", merges_file = dir / "merges.txt",
                 config_file = dir / "tokenizer_config.json";
  try {
    read_vocab_object(read_json(vocab_file), spec);
  } catch (const json::exception& e) {
    fail(vocab_file.string(), std::string("expected an object of token -> id: ") + e.what());
  } catch (const std::invalid_argument& e) {
    fail(vocab_file.string(), e.what());
  }
  std::istringstream merges(read_text(merges_file));
  std::string line;
  for (int line_no = 1; std::getline(merges, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    spec.merges.push_back(parse_merge_line(line, merges_file.string() + ":" + std::to_string(line_no)));
  }
  if (fs::exists(config_file)) {
    const json config = read_json(config_file);
    try {
      const auto decoder = config.find("added_tokens_decoder");
      if (decoder != config.end())
        for (auto it = decoder->begin(); it != decoder->end(); ++it)
          spec.added.push_back(parse_added_token(it.value(), token_id(json::parse(it.key(), nullptr, false), "added_tokens_decoder key")));
    } catch (const std::exception& e) {
      fail(config_file.string(), std::string("malformed added_tokens_decoder: ") + e.what());
    }
  }
  return spec;
}

}  // namespace

TokenizerSpec read_tokenizer_files(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return read_tokenizer_json(p);
  if (!fs::is_directory(p, ec))
    fail(path, fs::exists(p, ec) ? "is not a tokenizer file or directory"
                                 : "no such tokenizer file or directory (expected tokenizer.json, or a directory holding "
                                   "tokenizer.json or vocab.json + merges.txt)");
  // Files of a model directory follow the symlink rule (io/model_files.h).
  if (const std::string tj = io::model_file(path, "tokenizer.json"); !tj.empty()) return read_tokenizer_json(tj);
  if (!io::model_file(path, "vocab.json").empty() && !io::model_file(path, "merges.txt").empty()) {
    io::model_file(path, "tokenizer_config.json");  // checked too when present
    return read_vocab_and_merges(p);
  }
  fail(path, "no tokenizer in this directory: looked for tokenizer.json, or vocab.json + merges.txt "
             "(+ tokenizer_config.json)");
}

}  // namespace lq::tok
