// `lance-quant tokenize DIR [--decode]`: a line filter over the tokenizer, for scripts and the
// Hugging Face interop test. One output line per input line (split on '\n' only, so a '\r' inside a
// line is part of the text).
#include <charconv>
#include <cstdio>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "io/error.h"
#include "tokenizer/tokenizer.h"

namespace lq::cli {
namespace {

constexpr const char* kUsage =
    "usage: lance-quant tokenize TOKENIZER_OR_MODEL_DIR [--decode]\n"
    "  Reads lines on stdin. Default: prints each line's token ids, space separated (no BOS/EOS;\n"
    "  special-token strings in the text become their ids). --decode: reads lines of ids and prints\n"
    "  the text. TOKENIZER_OR_MODEL_DIR is a tokenizer.json or a directory holding tokenizer.json or\n"
    "  vocab.json + merges.txt (+ tokenizer_config.json).\n";

std::vector<int32_t> parse_ids(const std::string& line, size_t line_no, const tok::Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  const char* p = line.data();
  const char* end = p + line.size();
  while (p < end) {
    if (*p == ' ' || *p == '\t' || *p == '\r') {
      ++p;
      continue;
    }
    int32_t id = 0;
    const auto [next, ec] = std::from_chars(p, end, id);
    const std::string where = "stdin line " + std::to_string(line_no);
    if (ec != std::errc() || (next < end && *next != ' ' && *next != '\t' && *next != '\r'))
      fail(where, "expected space-separated token ids, got '" + line + "'");
    if (!tokenizer.id_to_token(id)) fail(where, "token id " + std::to_string(id) + " is not in the tokenizer");
    ids.push_back(id);
    p = next;
  }
  return ids;
}

void print_ids(const std::vector<int32_t>& ids, std::string& out) {
  char buffer[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, ids[i]);
    out.append(buffer, end);
  }
}

}  // namespace

int cmd_tokenize(const Args& args) {
  std::string path;
  bool decode = false;
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--decode") {
      decode = true;
    } else if (a.starts_with("--") || !path.empty()) {
      std::fprintf(stderr, "lance-quant tokenize: unexpected argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    } else {
      path = a;
    }
  }
  if (path.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const tok::Tokenizer tokenizer = tok::Tokenizer::load(path);
  std::ios::sync_with_stdio(false);
  std::string line, out;
  for (size_t line_no = 1; std::getline(std::cin, line); ++line_no) {
    if (decode)
      out += tokenizer.decode(parse_ids(line, line_no, tokenizer));
    else
      print_ids(tokenizer.encode(line), out);
    out += '\n';
    if (out.size() > (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace lq::cli
