// The regex pre-tokenizer: splits text into the pieces BPE runs on, keeping both the matches and
// the text between them (Hugging Face Split with behaviour "Isolated").
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lq::tok {

// The Qwen2 pre-tokenizer pattern (used when the tokenizer files carry none, i.e. vocab.json+merges.txt).
extern const char* const kQwen2Pattern;

// Rewrites an Oniguruma pattern (what HF tokenizers compiles) for PCRE2 with UTF+UCP: Oniguruma's
// \s is the Unicode White_Space property, PCRE2's is not (U+0085, U+180E), so \s and \S are spelled out
// as explicit classes. Throws
// lq::Error for a construct this rewrite cannot express (\S inside a character class).
std::string onig_to_pcre2(std::string_view pattern);

class RegexSplitter {
 public:
  explicit RegexSplitter(const std::string& onig_pattern);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Appends the pieces of `text` (valid UTF-8) in order; together they spell `text`.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace lq::tok
