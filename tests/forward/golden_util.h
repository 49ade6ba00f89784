// Helpers for the forward golden tests: reading golden tensors and comparing them.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace lq::test {

inline std::vector<int32_t> read_i32(const io::TensorStore& st, const std::string& name) {
  const io::TensorInfo& t = st.info(name);
  if (t.dtype != io::DType::I32) throw std::runtime_error(name + " is not I32");
  const auto bytes = st.file_of(name).bytes(t);
  std::vector<int32_t> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// max |a - b| / max |b| (the fixture README's tolerance measure); inf on size mismatch.
inline double rel_max_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}
inline double rel_max_err(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() ? rel_max_err(a.data(), b.data(), a.size()) : INFINITY;
}

// ||a - b|| / ||b||
inline double rel_l2_err(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace lq::test
