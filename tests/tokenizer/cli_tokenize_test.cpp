// `lance-quant tokenize`: the golden ids through the CLI, --decode, and its error exits.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_paths.h"

namespace {

using nlohmann::json;

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string write_input(const std::string& name, const std::string& text) {
  const std::string path = lq::test::scratch_dir(name) + "/input.txt";
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string join_ids(const json& ids) {
  std::string s;
  for (const auto& id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id.get<int>());
  }
  return s;
}

TEST(CliTokenize, EncodesGoldenLinesAndDecodesThemBack) {
  LQ_REQUIRE_SHARED();
  std::ifstream in(lq::test::lance_mini_dir() + "/golden/tokenizer_golden.json");
  const json golden = json::parse(in);
  std::string input, expected_ids, expected_text;
  for (const json& c : golden["cases"]) {
    const std::string text = c["text"];
    if (text.find('\n') != std::string::npos) continue;  // one text per line
    input += text + "\n";
    expected_ids += join_ids(c["ids"]) + "\n";
    expected_text += text + "\n";  // the fixture texts are already NFC
  }
  ASSERT_GT(expected_ids.size(), 100u);
  std::string out;
  const std::string dir = quoted(lq::test::lance_mini_dir());
  ASSERT_EQ(lq::test::run_command(lq::test::exe() + " tokenize " + dir + " < " + quoted(write_input("cli_tok_enc", input)), &out), 0)
      << out;
  EXPECT_EQ(out, expected_ids);
  ASSERT_EQ(lq::test::run_command(lq::test::exe() + " tokenize " + dir + " --decode < " +
                                      quoted(write_input("cli_tok_dec", expected_ids)), &out), 0)
      << out;
  EXPECT_EQ(out, expected_text);
}

TEST(CliTokenize, MissingTokenizerExitsOneNamingDirectoryAndFiles) {
  const std::string dir = lq::test::scratch_dir("cli_tok_missing");
  std::string out;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " tokenize " + quoted(dir) + " < /dev/null", &out), 1);
  EXPECT_NE(out.find(dir), std::string::npos) << out;
  EXPECT_NE(out.find("tokenizer.json"), std::string::npos) << out;
  EXPECT_NE(out.find("vocab.json + merges.txt"), std::string::npos) << out;
}

TEST(CliTokenize, DecodeRejectsUnknownIdsAndBadUsage) {
  LQ_REQUIRE_SHARED();
  std::string out;
  const std::string dir = quoted(lq::test::lance_mini_dir());
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " tokenize " + dir + " --decode < " +
                                      quoted(write_input("cli_tok_bad_id", "1 2\n5000\n")), &out), 1);
  EXPECT_NE(out.find("stdin line 2"), std::string::npos) << out;
  EXPECT_NE(out.find("5000"), std::string::npos) << out;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " tokenize " + dir + " --decode < " +
                                      quoted(write_input("cli_tok_bad_text", "12 x\n")), &out), 1);
  EXPECT_NE(out.find("stdin line 1"), std::string::npos) << out;
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " tokenize", &out), 2);
  EXPECT_EQ(lq::test::run_command(lq::test::exe() + " tokenize " + dir + " --bogus", &out), 2);
}

}  // namespace
