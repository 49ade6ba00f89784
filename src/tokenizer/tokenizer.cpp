#include "tokenizer/tokenizer.h"

#include <array>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "io/error.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer_files.h"
#include "tokenizer/utf8.h"

namespace lq::tok {
namespace {

// Ids index a table, so they must be small and non-negative.
constexpr int32_t kMaxId = 1 << 24;
// The word cache is dropped when it grows past this many entries (bounds memory on odd input).
constexpr size_t kWordCacheLimit = 1 << 17;

enum class IdKind : uint8_t { kNone, kVocab, kAdded, kSpecial };

}  // namespace

struct Tokenizer::Impl {
  explicit Impl(TokenizerSpec spec);

  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;  // no added tokens inside
  void encode_normalizable(std::string_view text, std::vector<int32_t>& out) const;

  std::string source;
  std::unordered_map<std::string, int32_t> vocab;           // model vocabulary only
  std::unordered_map<std::string, int32_t> added_by_text;   // added tokens (take precedence)
  std::vector<std::string> token_of_id;
  std::vector<IdKind> kind_of_id;
  size_t distinct_ids = 0;
  std::array<int32_t, 256> byte_ids{};  // -1: the byte's symbol is missing from the vocabulary
  BpeMerges merges;
  AddedTokenMatcher raw_added, normalized_added;
  RegexSplitter splitter;
  bool nfc = true;
  bool ignore_merges = false;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> word_cache;
};

Tokenizer::Impl::Impl(TokenizerSpec spec)
    : source(spec.source), splitter(spec.pattern), nfc(spec.nfc), ignore_merges(spec.ignore_merges) {
  const auto record_id = [&](int32_t id, const std::string& token, IdKind kind) {
    if (id < 0 || id >= kMaxId) fail(source, "token id " + std::to_string(id) + " of '" + token + "' is out of range");
    if (static_cast<size_t>(id) >= token_of_id.size()) {
      token_of_id.resize(id + 1);
      kind_of_id.resize(id + 1, IdKind::kNone);
    }
    if (kind_of_id[id] == IdKind::kNone) ++distinct_ids;
    token_of_id[id] = token;
    kind_of_id[id] = kind;
  };
  vocab.reserve(spec.vocab.size());
  token_of_id.reserve(spec.vocab.size() + spec.added.size());
  kind_of_id.reserve(spec.vocab.size() + spec.added.size());
  for (const auto& [token, id] : spec.vocab) {
    vocab.emplace(token, id);
    record_id(id, token, IdKind::kVocab);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(byte_symbol(static_cast<uint8_t>(b)));
    byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }
  merges.reserve(spec.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    joined.assign(left).append(right);
    const auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(joined);
    if (l == vocab.end() || r == vocab.end() || m == vocab.end())
      fail(source, "merge " + std::to_string(rank) + " '" + left + " " + right + "' uses a token missing from the vocabulary");
    merges.add(l->second, r->second, m->second);
  }
  std::vector<AddedToken> raw, normalized;
  for (AddedToken& t : spec.added) {
    record_id(t.id, t.content, t.special ? IdKind::kSpecial : IdKind::kAdded);
    added_by_text[t.content] = t.id;
    (t.normalized && nfc ? normalized : raw).push_back(std::move(t));
  }
  raw_added = AddedTokenMatcher(std::move(raw));
  normalized_added = AddedTokenMatcher(std::move(normalized));
}

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {  // the commonest case needs neither BPE nor the cache
    if (const int32_t id = byte_ids[static_cast<uint8_t>(word[0])]; id >= 0) out.push_back(id);
    return;
  }
  std::string key(word);
  {
    std::lock_guard lock(cache_mutex);
    if (const auto it = word_cache.find(key); it != word_cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  const auto whole = ignore_merges ? vocab.find(bytes_to_symbols(word)) : vocab.end();
  if (whole != vocab.end()) {
    symbols.push_back(whole->second);
  } else {
    symbols.reserve(word.size());
    for (char c : word)  // a byte whose symbol is not in the vocabulary is dropped, as in HF without unk
      if (const int32_t id = byte_ids[static_cast<uint8_t>(c)]; id >= 0) symbols.push_back(id);
    merges.apply(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  std::lock_guard lock(cache_mutex);
  if (word_cache.size() >= kWordCacheLimit) word_cache.clear();
  word_cache.emplace(std::move(key), std::move(symbols));
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<std::string_view> words;
  splitter.split(text, words);
  for (std::string_view word : words) encode_word(word, out);
}

// Text between raw-matched added tokens: normalise, then match the normalized added tokens.
void Tokenizer::Impl::encode_normalizable(std::string_view text, std::vector<int32_t>& out) const {
  const std::string normalized = nfc ? tok::nfc(text) : std::string(text);
  std::vector<Segment> segments;
  normalized_added.split(normalized, segments);
  for (const Segment& s : segments) {
    if (s.added_id >= 0)
      out.push_back(s.added_id);
    else
      encode_plain(s.text, out);
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& path) {
  return Tokenizer(std::make_unique<Impl>(read_tokenizer_files(path)));
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::string repaired;
  std::string_view input = text;
  if (!is_valid_utf8(text)) {
    repaired = utf8_repair(text);
    input = repaired;
  }
  std::vector<Segment> segments;
  impl_->raw_added.split(input, segments);
  std::vector<int32_t> ids;
  ids.reserve(input.size() / 3 + 4);
  for (const Segment& s : segments) {
    if (s.added_id >= 0)
      ids.push_back(s.added_id);
    else
      impl_->encode_normalizable(s.text, ids);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const { return decode(ids, false); }

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->kind_of_id.size()) continue;
    const IdKind kind = impl_->kind_of_id[id];
    if (kind == IdKind::kNone || (skip_special_tokens && kind == IdKind::kSpecial)) continue;
    append_token_bytes(impl_->token_of_id[id], bytes);
  }
  return utf8_repair(bytes);
}

std::optional<int32_t> Tokenizer::token_id(const std::string& token) const {
  if (const auto it = impl_->added_by_text.find(token); it != impl_->added_by_text.end()) return it->second;
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->kind_of_id.size() || impl_->kind_of_id[id] == IdKind::kNone)
    return std::nullopt;
  return impl_->token_of_id[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->kind_of_id.size() && impl_->kind_of_id[id] == IdKind::kSpecial;
}

size_t Tokenizer::size() const { return impl_->distinct_ids; }

}  // namespace lq::tok
