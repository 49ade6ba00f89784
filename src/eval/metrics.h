// Small, independently testable metrics used by `lance-quant eval` to compare a quantized model
// (QUANT) with its original (BASE). Every function is a plain definition; the report cites them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lq::eval {

// -log softmax(logits[0..n))[target], computed in double with the max subtracted.
double token_nll(const float* logits, int64_t n, int32_t target);
// exp(sum_nll / count); throws when count == 0.
double perplexity(double sum_nll, int64_t count);

// KL(P || Q) in nats between the softmax distributions of two logit rows over the first n columns:
// sum_i p_i (log p_i - log q_i). P is BASE (the reference), Q is QUANT.
double kl_divergence(const float* p_logits, const float* q_logits, int64_t n);

// Value at quantile q in [0, 1] by linear interpolation between order statistics (numpy's default).
double percentile(std::vector<double> values, double q);

// Character-level similarity 1 - levenshtein(a, b) / max(|a|, |b|) over Unicode code points
// (UTF-8 decoded; an invalid byte counts as one character). Two empty strings: 1.
int64_t levenshtein_distance(const std::u32string& a, const std::u32string& b);
double levenshtein_similarity(const std::string& a, const std::string& b);
// |A ∩ B| / |A ∪ B| of the sets of whitespace-separated words (case kept). Both empty: 1.
double word_jaccard(const std::string& a, const std::string& b);

// cos(a, b) = <a, b> / (|a| |b|); 1 when both are zero, 0 when exactly one is.
double cosine_similarity(const float* a, const float* b, int64_t n);
// |test - ref| / |ref| (L2); 0 when both are zero, +inf when only ref is zero.
double relative_error(const float* ref, const float* test, int64_t n);
// 10 log10(peak^2 / MSE(ref, test)); +inf when identical. `peak` is the signal range
// (1 for images in [0, 1]; max(ref) - min(ref) for latents, see data_range).
double psnr_db(const float* ref, const float* test, int64_t n, double peak);
double data_range(const float* x, int64_t n);  // max - min

}  // namespace lq::eval
