#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>

#include "io/error.h"

namespace lq::eval {

namespace {

// log sum exp(x - max) + max, in double.
double log_sum_exp(const float* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, double(x[i]));
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(x[i]) - m);
  return m + std::log(s);
}

std::u32string utf8_code_points(const std::string& s) {
  std::u32string out;
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    bool valid = len > 0 && i + size_t(len) <= s.size();
    char32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; valid && k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + size_t(k)]);
      if ((c >> 6) != 0x2) valid = false;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (!valid) {  // one invalid byte is one character
      out.push_back(0xDC00 + b);  // lone-surrogate range: never equal to a valid code point
      ++i;
      continue;
    }
    out.push_back(cp);
    i += size_t(len);
  }
  return out;
}

std::set<std::string> word_set(const std::string& s) {
  std::istringstream in(s);
  std::set<std::string> words;
  std::string w;
  while (in >> w) words.insert(w);
  return words;
}

}  // namespace

double token_nll(const float* logits, int64_t n, int32_t target) {
  if (target < 0 || target >= n) fail("token_nll", "target " + std::to_string(target) + " outside the " + std::to_string(n) + " scored columns");
  return log_sum_exp(logits, n) - double(logits[target]);
}

double perplexity(double sum_nll, int64_t count) {
  if (count <= 0) fail("perplexity", "no scored tokens");
  return std::exp(sum_nll / double(count));
}

double kl_divergence(const float* p_logits, const float* q_logits, int64_t n) {
  const double lp = log_sum_exp(p_logits, n), lq = log_sum_exp(q_logits, n);
  double kl = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double log_p = double(p_logits[i]) - lp, log_q = double(q_logits[i]) - lq;
    const double p = std::exp(log_p);
    if (p > 0.0) kl += p * (log_p - log_q);
  }
  return std::max(kl, 0.0);  // rounding can leave -1e-17 for identical rows
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) fail("percentile", "no values");
  if (!(q >= 0.0 && q <= 1.0)) fail("percentile", "quantile must be in [0, 1]");
  std::sort(v.begin(), v.end());
  const double pos = q * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

int64_t levenshtein_distance(const std::u32string& a, const std::u32string& b) {
  std::vector<int64_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = int64_t(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = int64_t(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

double levenshtein_similarity(const std::string& a, const std::string& b) {
  const std::u32string ua = utf8_code_points(a), ub = utf8_code_points(b);
  const size_t longest = std::max(ua.size(), ub.size());
  if (longest == 0) return 1.0;
  return 1.0 - double(levenshtein_distance(ua, ub)) / double(longest);
}

double word_jaccard(const std::string& a, const std::string& b) {
  const std::set<std::string> wa = word_set(a), wb = word_set(b);
  if (wa.empty() && wb.empty()) return 1.0;
  size_t common = 0;
  for (const auto& w : wa) common += wb.count(w);
  return double(common) / double(wa.size() + wb.size() - common);
}

double cosine_similarity(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  if (aa == 0 && bb == 0) return 1.0;
  if (aa == 0 || bb == 0) return 0.0;
  return ab / std::sqrt(aa * bb);
}

double relative_error(const float* ref, const float* test, int64_t n) {
  double d = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = double(test[i]) - ref[i];
    d += e * e;
    r += double(ref[i]) * ref[i];
  }
  if (d == 0) return 0.0;
  if (r == 0) return std::numeric_limits<double>::infinity();
  return std::sqrt(d / r);
}

double psnr_db(const float* ref, const float* test, int64_t n, double peak) {
  if (n <= 0) fail("psnr_db", "no values");
  double se = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = double(test[i]) - ref[i];
    se += e * e;
  }
  if (se == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(peak * peak / (se / double(n)));
}

double data_range(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const auto [lo, hi] = std::minmax_element(x, x + n);
  return double(*hi) - double(*lo);
}

}  // namespace lq::eval
