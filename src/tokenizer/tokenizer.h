// Qwen2 byte-level BPE tokenizer, token-for-token compatible with Hugging Face `tokenizers`
// (checked by tests/tokenizer/hf_interop_test.py). Loads tokenizer.json, or vocab.json + merges.txt
// (+ added tokens from tokenizer_config.json).
//
// encode: added/special tokens are matched as exact strings first and never split; the remaining
// text is NFC-normalised, split by the Qwen2 pre-tokenizer regex, mapped to GPT-2 byte symbols and
// merged by BPE. No BOS/EOS is added (HF `add_special_tokens=False`). Input that is not valid UTF-8 is
// first repaired: each ill-formed subsequence becomes U+FFFD (as Python's errors="replace" would do
// before calling HF), so encode never throws on text.
// decode: ids -> token strings -> bytes through the reverse byte map -> UTF-8, with each invalid
// sequence replaced by U+FFFD (as HF's ByteLevel decoder does). Ids without a token are skipped, as HF does.
// Thread safety: all const methods may be called concurrently.
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
  std::string decode(const std::vector<int32_t>& ids) const;    // special tokens kept
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;
  std::optional<int32_t> token_id(const std::string& token) const;  // vocab or added token
  std::optional<std::string> id_to_token(int32_t id) const;        // the vocab string or added content
  bool is_special(int32_t id) const;  // an added token flagged special
  size_t size() const;  // len(tokenizer): number of distinct ids, vocab + added tokens

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lq::tok
