// Qwen2 byte-level BPE tokenizer: loads tokenizer.json, or vocab.json + merges.txt (+ added tokens
// from tokenizer_config.json); NFC normalisation, the Qwen2 pre-tokenizer regex, added/special
// tokens matched as exact strings before BPE. No BOS is added.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lq::tok {

class Tokenizer {
 public:
  // `path`: a tokenizer.json file, or a directory holding tokenizer.json or vocab.json+merges.txt.
  static Tokenizer load(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int32_t> encode(const std::string& text) const;  // added tokens recognised
  std::string decode(const std::vector<int32_t>& ids) const;
  std::optional<int32_t> token_id(const std::string& token) const;  // vocab or added token
  size_t size() const;  // len(tokenizer): vocab + added tokens

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lq::tok
