// Reads a tokenizer's description from disk: Hugging Face tokenizer.json, or the older
// vocab.json + merges.txt (+ tokenizer_config.json for the added tokens).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/added_tokens.h"

namespace lq::tok {

struct TokenizerSpec {
  std::string source;  // the file or directory read, for messages
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedToken> added;
  std::string pattern;         // pre-tokenizer regex (Oniguruma syntax)
  bool ignore_merges = false;  // a word that is itself in the vocabulary skips BPE
  bool nfc = true;             // NFC-normalise text outside non-normalized added tokens
};

// `path`: a tokenizer.json file, or a directory with tokenizer.json, else vocab.json + merges.txt.
// Throws lq::Error naming the path and the files looked for, or the malformed/unsupported field.
TokenizerSpec read_tokenizer_files(const std::string& path);

}  // namespace lq::tok
