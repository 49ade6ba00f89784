#include "tokenizer/tokenizer.h"

#include "io/error.h"

namespace lq::tok {

struct Tokenizer::Impl {};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer Tokenizer::load(const std::string& path) { fail(path, "tokenizer not implemented yet"); }
std::vector<int32_t> Tokenizer::encode(const std::string&) const { return {}; }
std::string Tokenizer::decode(const std::vector<int32_t>&) const { return {}; }
std::optional<int32_t> Tokenizer::token_id(const std::string&) const { return std::nullopt; }
size_t Tokenizer::size() const { return 0; }

}  // namespace lq::tok
