// Tokenizer tests: the lance-mini golden ids (vocab.json + merges.txt path), the real Qwen2.5
// tokenizer.json, round trips, added tokens, error messages, and hand-checked BPE/regex/UTF-8 rules
// on a tiny tokenizer written to a scratch directory (these run without ../shared).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/error.h"
#include "test_paths.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace lq::tok {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

std::string qwen_dir() { return test::shared_dir() + "/data/qwen2.5-tokenizer"; }

// The real tokenizer is loaded once for all tests that use it (parsing 7 MB of JSON takes a while).
const Tokenizer& qwen() {
  static const Tokenizer tokenizer = Tokenizer::load(qwen_dir());
  return tokenizer;
}

// The message of the lq::Error that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Byte symbols get ids 0..255 (in byte order); extra tokens follow.
fs::path write_tiny_tokenizer(const std::string& name, const std::vector<std::string>& merges,
                              const json& added_tokens_decoder = json::object()) {
  const fs::path dir = test::scratch_dir(name);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(static_cast<uint8_t>(b))] = b;
  std::string merges_txt = "#version: 0.2\n";
  int next_id = 256;
  for (const std::string& m : merges) {
    merges_txt += m + "\n";
    std::string merged = m;
    merged.erase(merged.find(' '), 1);
    if (!vocab.contains(merged)) vocab[merged] = next_id++;
  }
  write_file(dir / "vocab.json", vocab.dump());
  write_file(dir / "merges.txt", merges_txt);
  write_file(dir / "tokenizer_config.json", json{{"added_tokens_decoder", added_tokens_decoder}}.dump());
  return dir;
}

// --- lance-mini fixture: vocab.json + merges.txt + tokenizer_config.json ---------------------------

TEST(TokenizerFixture, GoldenIdsMatchExactly) {
  LQ_REQUIRE_SHARED();
  const Tokenizer tok = Tokenizer::load(test::lance_mini_dir());
  EXPECT_EQ(tok.size(), 4263u);
  const json golden = json::parse(read_file(test::lance_mini_dir() + "/golden/tokenizer_golden.json"));
  ASSERT_EQ(golden.at("cases").size(), 50u);
  for (const json& c : golden["cases"]) {
    const std::string text = c.at("text");
    EXPECT_EQ(tok.encode(text), c.at("ids").get<std::vector<int32_t>>()) << "text: " << text;
  }
}

TEST(TokenizerFixture, DecodeInvertsEncodeUpToNfc) {
  LQ_REQUIRE_SHARED();
  const Tokenizer tok = Tokenizer::load(test::lance_mini_dir());
  const json golden = json::parse(read_file(test::lance_mini_dir() + "/golden/tokenizer_golden.json"));
  for (const json& c : golden["cases"]) {
    const std::string text = c.at("text");
    EXPECT_EQ(tok.decode(c.at("ids").get<std::vector<int32_t>>()), nfc(text)) << text;
  }
}

TEST(TokenizerFixture, AddedTokensAreSpecialAndNeverSplit) {
  LQ_REQUIRE_SHARED();
  const Tokenizer tok = Tokenizer::load(test::lance_mini_dir());
  const int32_t im_start = tok.token_id("<|im_start|>").value();
  const int32_t im_end = tok.token_id("<|im_end|>").value();
  EXPECT_EQ(im_start, 4257);
  EXPECT_EQ(im_end, 4258);
  EXPECT_TRUE(tok.is_special(im_start));
  EXPECT_FALSE(tok.is_special(tok.token_id("the").value_or(0)));
  const auto ids = tok.encode("x<|im_start|><|im_end|>y<|im_start");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids[1], im_start);
  EXPECT_EQ(ids[2], im_end);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), im_start), 1) << "a partial token string must not match";
  EXPECT_EQ(tok.decode(ids), "x<|im_start|><|im_end|>y<|im_start");
  EXPECT_EQ(tok.decode(ids, /*skip_special_tokens=*/true), "xy<|im_start");
}

// --- the real Qwen2.5 tokenizer.json --------------------------------------------------------------

TEST(TokenizerQwen, LoadsTokenizerJson) {
  LQ_REQUIRE_SHARED();
  const Tokenizer tok = Tokenizer::load(qwen_dir() + "/tokenizer.json");  // the file itself
  EXPECT_EQ(tok.size(), 151665u);  // 151643 vocab + 22 added tokens
  EXPECT_EQ(tok.token_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tok.token_id("<|im_start|>"), 151644);
  EXPECT_TRUE(tok.is_special(151643));
  EXPECT_FALSE(tok.is_special(151657)) << "<tool_call> is added but not special";
  EXPECT_EQ(tok.id_to_token(151657), "<tool_call>");
  EXPECT_EQ(tok.id_to_token(220), "\xC4\xA0");  // "Ġ", a space
  EXPECT_FALSE(tok.id_to_token(151665).has_value());
}

TEST(TokenizerQwen, RoundTripOnVariedLinesIsNfc) {
  LQ_REQUIRE_SHARED();
  const Tokenizer& tok = qwen();
  std::istringstream lines(read_file(std::string(LQ_SOURCE_DIR) + "/tests/tokenizer/data/varied_lines.txt"));
  std::string line;
  size_t count = 0, tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> encoded;
  std::vector<std::string> texts;
  while (std::getline(lines, line)) {
    encoded.push_back(tok.encode(line));
    texts.push_back(line);
    tokens += encoded.back().size();
    ++count;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_GE(count, 2000u);
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(tok.decode(encoded[i]), nfc(texts[i])) << "line " << i + 1;
  std::printf("encoded %zu lines, %zu tokens in %.3f s (%.0f tokens/s, cold word cache)\n", count, tokens,
              seconds, tokens / seconds);
  EXPECT_LT(seconds, 2.0) << "encoding is far slower than expected";
}

TEST(TokenizerQwen, NfcAppliesOutsideAddedTokens) {
  LQ_REQUIRE_SHARED();
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.encode("cafe\xCC\x81"), tok.encode("caf\xC3\xA9"));      // e + combining acute == é
  EXPECT_EQ(tok.encode("\xE2\x84\xAB"), tok.encode("\xC3\x85"));          // angstrom sign == Å
  EXPECT_EQ(tok.decode(tok.encode("cafe\xCC\x81<|im_end|>")), "caf\xC3\xA9<|im_end|>");
}

TEST(TokenizerQwen, InvalidUtf8IsReplacedNotRejected) {
  LQ_REQUIRE_SHARED();
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.encode("a\xFF" "b"), tok.encode("a\xEF\xBF\xBD" "b"));
  // A lone lead byte of a 4-byte sequence decodes to U+FFFD, as HF's ByteLevel decoder gives.
  const int32_t lead_byte = tok.token_id(byte_symbol(0xF0)).value();
  EXPECT_EQ(tok.decode({lead_byte, 'a' - '!'}), "\xEF\xBF\xBD" "a");  // Qwen's byte ids: '!' is 0
}

// --- pieces of the pipeline, checked against hand-derived expectations ------------------------------

TEST(TokenizerUtf8, RepairReplacesMaximalSubparts) {
  // The example of Unicode 15 §3.9 (Table 3-8): a FFFD FFFD FFFD b FFFD c FFFD FFFD d.
  EXPECT_EQ(utf8_repair("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd");
  EXPECT_EQ(utf8_repair("\xC0\xAF"), "\uFFFD\uFFFD");                // overlong: each byte alone
  EXPECT_EQ(utf8_repair("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");     // surrogate
  EXPECT_EQ(utf8_repair("\xF0\x9F\xA6"), "\uFFFD");                    // truncated 4-byte sequence
  EXPECT_EQ(utf8_repair("ok \xF0\x9F\xA6\x99"), "ok \xF0\x9F\xA6\x99");
  EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9"));
  EXPECT_FALSE(is_valid_utf8("caf\xC3"));
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");
}

TEST(TokenizerByteLevel, Gpt2ByteMap) {
  EXPECT_EQ(byte_symbol(' '), "\xC4\xA0");    // U+0120 Ġ
  EXPECT_EQ(byte_symbol('\n'), "\xC4\x8A");   // U+010A Ċ
  EXPECT_EQ(byte_symbol(0), "\xC4\x80");      // U+0100
  EXPECT_EQ(byte_symbol(0xAD), "\xC5\x83");   // U+0143: the last of the 68 shifted bytes
  EXPECT_EQ(byte_symbol('a'), "a");
  EXPECT_EQ(byte_symbol(0xE9), "\xC3\xA9");   // printable Latin-1 maps to itself
  for (int b = 0; b < 256; ++b) {
    std::string back;
    append_token_bytes(byte_symbol(static_cast<uint8_t>(b)), back);
    EXPECT_EQ(back, std::string(1, static_cast<char>(b)));
  }
  std::string raw;
  append_token_bytes("a b", raw);  // ' ' is no symbol: the token's own bytes are kept
  EXPECT_EQ(raw, "a b");
}

std::vector<std::string> pieces_of(const std::string& text) {
  static const RegexSplitter splitter(kQwen2Pattern);
  std::vector<std::string_view> views;
  splitter.split(text, views);
  return {views.begin(), views.end()};
}

TEST(TokenizerPreTokenizer, Qwen2RegexPieces) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces_of("a   b"), (V{"a", "  ", " b"}));  // \s+(?!\S) leaves the last space to the word
  EXPECT_EQ(pieces_of("a  "), (V{"a", "  "}));
  EXPECT_EQ(pieces_of("I'M here"), (V{"I", "'M", " here"}));  // (?i:'m)
  EXPECT_EQ(pieces_of("we'LL"), (V{"we", "'LL"}));
  EXPECT_EQ(pieces_of("2024"), (V{"2", "0", "2", "4"}));     // digits one by one
  EXPECT_EQ(pieces_of("a\r\nb"), (V{"a", "\r\n", "b"}));
  EXPECT_EQ(pieces_of("x!!!\n\ny"), (V{"x", "!!!\n\n", "y"}));
  EXPECT_EQ(pieces_of("(hi)"), (V{"(hi", ")"}));
  // Whitespace is Unicode White_Space: NBSP is, U+180E (Mongolian vowel separator) is not.
  EXPECT_EQ(pieces_of("x\u00A0\u00A0y"), (V{"x", "\u00A0", "\u00A0y"}));
  EXPECT_EQ(pieces_of("x \u180E"), (V{"x", " \u180E"}));
  EXPECT_EQ(onig_to_pcre2("[^\\s]"), "[^" + onig_to_pcre2("\\s").substr(1));
}

// --- errors ---------------------------------------------------------------------------------------

TEST(TokenizerErrors, MissingDirectoryNamesTheFilesLookedFor) {
  const std::string dir = test::scratch_dir("tok_empty");
  const std::string message = error_of([&] { Tokenizer::load(dir); });
  EXPECT_NE(message.find(dir), std::string::npos) << message;
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("vocab.json"), std::string::npos) << message;
  EXPECT_NE(message.find("merges.txt"), std::string::npos) << message;
  EXPECT_NE(error_of([&] { Tokenizer::load(dir + "/nope"); }).find("no such"), std::string::npos);
}

TEST(TokenizerErrors, BadMergesAndVocabulary) {
  const fs::path dir = write_tiny_tokenizer("tok_bad_merges", {"a b"});
  write_file(dir / "merges.txt", "#version: 0.2\na b\nx y z\n");
  std::string message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("merges.txt:3"), std::string::npos) << message;
  write_file(dir / "merges.txt", "q \xC3\xA9\xC3\xA9\n");  // "éé" is not in the vocabulary
  message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("missing from the vocabulary"), std::string::npos) << message;
  write_file(dir / "vocab.json", "[1, 2]");
  message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("vocab.json"), std::string::npos) << message;
  write_file(dir / "vocab.json", "{\"a\": ");
  message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("malformed JSON"), std::string::npos) << message;
}

TEST(TokenizerErrors, UnsupportedTokenizerJsonIsRejected) {
  const fs::path dir = test::scratch_dir("tok_unsupported");
  const json pre = {{"type", "Sequence"},
                    {"pretokenizers",
                     {{{"type", "Split"}, {"pattern", {{"Regex", kQwen2Pattern}}}, {"behavior", "Isolated"}},
                      {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  json root = {{"normalizer", {{"type", "NFKC"}}},
               {"pre_tokenizer", pre},
               {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}}};
  write_file(dir / "tokenizer.json", root.dump());
  std::string message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("NFKC"), std::string::npos) << message;
  root["normalizer"] = {{"type", "NFC"}};
  root["model"]["type"] = "WordPiece";
  write_file(dir / "tokenizer.json", root.dump());
  message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("BPE"), std::string::npos) << message;
  root["model"]["type"] = "BPE";
  root["model"]["merges"] = json::array({json::array({"a", "a"})});  // the [a, b] form; "aa" is missing from the vocabulary
  write_file(dir / "tokenizer.json", root.dump());
  message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find("missing from the vocabulary"), std::string::npos) << message;
  root["model"]["vocab"]["aa"] = 1;
  write_file(dir / "tokenizer.json", root.dump());
  const Tokenizer tok = Tokenizer::load(dir.string());
  EXPECT_EQ(tok.encode("aaa"), (std::vector<int32_t>{1, 0}));  // [aa, a]
  // ignore_merges: a word that is itself a token skips BPE (no merge builds "aaa" here).
  root["model"]["vocab"]["aaa"] = 2;
  root["model"]["ignore_merges"] = true;
  write_file(dir / "tokenizer.json", root.dump());
  EXPECT_EQ(Tokenizer::load(dir.string()).encode("aaa"), (std::vector<int32_t>{2}));
}

TEST(TokenizerErrors, MalformedJsonNamesTheFile) {
  const fs::path dir = test::scratch_dir("tok_bad_json");
  write_file(dir / "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0,}");
  const std::string message = error_of([&] { Tokenizer::load(dir.string()); });
  EXPECT_NE(message.find((dir / "tokenizer.json").string()), std::string::npos) << message;
  EXPECT_NE(message.find("malformed JSON"), std::string::npos) << message;
}

// --- BPE and added tokens on tiny tokenizers (vocab.json + merges.txt), hand-checked ---------------

TEST(TokenizerBpe, LowestRankMergesFirst) {
  // "a b" before "b c": abc -> [ab, c] -> [abc].
  const Tokenizer first_ab = Tokenizer::load(write_tiny_tokenizer("tok_ab", {"a b", "b c", "ab c"}).string());
  const int32_t ab = first_ab.token_id("ab").value(), abc = first_ab.token_id("abc").value();
  EXPECT_EQ(first_ab.encode("abc"), std::vector<int32_t>{abc});
  EXPECT_EQ(first_ab.encode("abab"), (std::vector<int32_t>{ab, ab}));
  EXPECT_EQ(first_ab.encode("bc"), std::vector<int32_t>{first_ab.token_id("bc").value()});
  // "b c" before "a b": abc -> [a, bc]; no merge joins a and bc.
  const Tokenizer first_bc = Tokenizer::load(write_tiny_tokenizer("tok_bc", {"b c", "a b", "ab c"}).string());
  EXPECT_EQ(first_bc.encode("abc"), (std::vector<int32_t>{'a', first_bc.token_id("bc").value()}));
  // Ties go left to right: "aaa" with merge "a a" -> [aa, a].
  const Tokenizer aa = Tokenizer::load(write_tiny_tokenizer("tok_aa", {"a a"}).string());
  EXPECT_EQ(aa.encode("aaa"), (std::vector<int32_t>{aa.token_id("aa").value(), 'a'}));
  EXPECT_EQ(aa.size(), 257u);
}

TEST(TokenizerBpe, WordsNeverMergeAcrossPreTokenizerPieces) {
  // " a" is one piece (space joins the letters after it), "a." splits into "a" and ".".
  const Tokenizer tok = Tokenizer::load(write_tiny_tokenizer("tok_pieces", {"Ġ a", "a ."}).string());
  const int32_t space_a = tok.token_id("\xC4\xA0" "a").value();
  EXPECT_EQ(tok.encode(" a."), (std::vector<int32_t>{space_a, '.'}));
  EXPECT_EQ(tok.decode({space_a, '.'}), " a.");
}

TEST(TokenizerBpe, RandomBytesRoundTripThroughRepairAndNfc) {
  const json added = {{"300", {{"content", "<s>"}, {"special", true}}}};
  const Tokenizer tok =
      Tokenizer::load(write_tiny_tokenizer("tok_random", {"a b", "ab c", "Ġ a", "Ġ Ġ", "ĠĠ ĠĠ", "Ã ©"}, added).string());
  // Pieces chosen to hit merges, whitespace runs, combining marks, the added token and invalid bytes.
  const std::vector<std::string> pool = {"a", "b", "c", " ", "  ", "\t", "\r\n", "e\xCC\x81", "\xC3\xA9", "<s>",
                                         "<s", "'S", "1", "\xF0\x9F\xA6\x99", "\xFF", "\xC3", "\xE2\x82", "!?"};
  uint32_t state = 12345;  // a fixed LCG: the test is deterministic
  auto next = [&] { return (state = state * 1664525u + 1013904223u) >> 8; };
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    for (int n = next() % 12; n > 0; --n) text += pool[next() % pool.size()];
    ASSERT_EQ(tok.decode(tok.encode(text)), nfc(utf8_repair(text))) << "trial " << trial;
  }
}

TEST(TokenizerAdded, LeftmostLongestMatch) {
  const json added = {
      {"300", {{"content", "<a>"}, {"special", true}}},
      {"301", {{"content", "<a><b>"}, {"special", true}}},
      {"302", {{"content", "<b>"}, {"special", true}}},
  };
  const Tokenizer tok = Tokenizer::load(write_tiny_tokenizer("tok_longest", {}, added).string());
  EXPECT_EQ(tok.encode("x<a><b>y"), (std::vector<int32_t>{'x', 301, 'y'}));
  EXPECT_EQ(tok.encode("<a><a><b><b>"), (std::vector<int32_t>{300, 301, 302}));
}

TEST(TokenizerAdded, LstripRstripAndSingleWord) {
  const json added = {
      {"300", {{"content", "<m>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}}},
      {"301", {{"content", "hi"}, {"special", false}, {"normalized", false}, {"single_word", true}}},
  };
  const Tokenizer tok = Tokenizer::load(write_tiny_tokenizer("tok_added", {}, added).string());
  EXPECT_EQ(tok.encode("a  <m>  b"), (std::vector<int32_t>{'a', 300, 'b'}));
  // Byte symbols have the byte's value as id here: ' ' is 32.
  EXPECT_EQ(tok.encode("hi there"), (std::vector<int32_t>{301, ' ', 't', 'h', 'e', 'r', 'e'}));
  EXPECT_EQ(tok.encode("this"), (std::vector<int32_t>{'t', 'h', 'i', 's'})) << "inside a word: no match";
  EXPECT_EQ(tok.encode("hi_"), (std::vector<int32_t>{'h', 'i', '_'})) << "'_' is a word character";
  EXPECT_EQ(tok.encode("(hi)"), (std::vector<int32_t>{'(', 301, ')'}));
  EXPECT_FALSE(tok.is_special(301));
  EXPECT_EQ(tok.size(), 258u);
}

}  // namespace
}  // namespace lq::tok
