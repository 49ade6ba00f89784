// Added tokens (special tokens like <|im_start|> and user-added words): matched as exact strings in
// the text before anything else, so they are never split by the pre-tokenizer or BPE.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lq::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool normalized = false;  // matched in NFC-normalised text instead of the raw input
  bool lstrip = false;      // swallows the whitespace on its left
  bool rstrip = false;      // swallows the whitespace on its right
  bool single_word = false; // only matches with no word character directly beside it
};

// A piece of text: either an added token (id >= 0) or plain text still to be tokenized (id < 0).
struct Segment {
  std::string_view text;
  int32_t added_id = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }

  // Appends the segments of `text` (valid UTF-8): leftmost-longest, non-overlapping matches, with
  // the rules of Hugging Face's AddedVocabulary (a single_word match that touches a word character
  // is dropped, and scanning resumes after it).
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  // The longest token matching at `pos`, or nullptr.
  const AddedToken* longest_at(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;                // longest first
  std::vector<std::vector<size_t>> by_first_byte_ = std::vector<std::vector<size_t>>(256);
};

}  // namespace lq::tok
