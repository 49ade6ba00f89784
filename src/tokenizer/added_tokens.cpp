#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace lq::tok {
namespace {

// The code point that ends at byte `end` (exclusive) of valid UTF-8.
char32_t code_point_before(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

// Start of the whitespace run that ends at `end`, not reaching before `floor`.
size_t whitespace_start(std::string_view s, size_t end, size_t floor) {
  while (end > floor) {
    size_t start = end - 1;
    while (start > floor && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!is_unicode_whitespace(next_code_point(s, pos))) break;
    end = start;
  }
  return end;
}

size_t whitespace_end(std::string_view s, size_t pos) {
  while (pos < s.size()) {
    size_t next = pos;
    if (!is_unicode_whitespace(next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const AddedToken& t) { return t.content.empty(); });
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  for (size_t i = 0; i < tokens_.size(); ++i)
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
}

const AddedToken* AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  for (size_t i : by_first_byte_[static_cast<unsigned char>(text[pos])])
    if (text.substr(pos).starts_with(tokens_[i].content)) return &tokens_[i];
  return nullptr;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  if (tokens_.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return;
  }
  size_t plain_start = 0;  // start of the text not yet emitted
  for (size_t pos = 0; pos < text.size();) {
    const AddedToken* token = longest_at(text, pos);
    if (!token) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + token->content.size();
    pos = stop;
    if (token->single_word) {
      const bool space_before = start == 0 || !is_word_character(code_point_before(text, start));
      size_t after = stop;
      const bool space_after = stop == text.size() || !is_word_character(next_code_point(text, after));
      if (!space_before || !space_after) continue;
    }
    if (token->lstrip) start = whitespace_start(text, start, plain_start);
    if (token->rstrip) stop = whitespace_end(text, stop);
    if (start > plain_start) out.push_back({text.substr(plain_start, start - plain_start), -1});
    out.push_back({text.substr(start, stop - start), token->id});
    plain_start = pos = stop;
  }
  if (plain_start < text.size()) out.push_back({text.substr(plain_start), -1});
}

}  // namespace lq::tok
