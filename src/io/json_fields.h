// Strict typed reads of the JSON files a model directory carries (configs, metas, quantization
// configs): every value must have the JSON type asked for and lie in its range, and errors name the
// file and the key. Integers must be integral numbers (256.9 and 2^32 + 256 for a 32-bit field are
// errors, never truncated; 4096.0 is 4096); reals must be finite. A key that is absent or null
// takes the fallback where one is given.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lq::io {

// Reads `path` as a JSON object (throws naming the file for I/O errors, invalid JSON, or a non-object).
nlohmann::json read_json_object(const std::string& path);

class JsonFields {
 public:
  // `j` must outlive this reader; `where` prefixes messages (the file, maybe a sub-object).
  JsonFields(const nlohmann::json& j, std::string where);
  bool has(const std::string& key) const;  // present and not null
  int64_t integer(const std::string& key, int64_t lo, int64_t hi, std::optional<int64_t> fallback = std::nullopt) const;
  int64_t integer_value(const nlohmann::json& v, const std::string& key, int64_t lo, int64_t hi) const;
  // A finite number; with `positive`, also > 0.
  double real(const std::string& key, std::optional<double> fallback, bool positive = false) const;
  bool boolean(const std::string& key, std::optional<bool> fallback = std::nullopt) const;
  std::string string(const std::string& key, std::optional<std::string> fallback = std::nullopt) const;
  // The object / array at `key` (throws when present with another type); nullptr when absent or null.
  const nlohmann::json* object(const std::string& key) const;
  const nlohmann::json* array(const std::string& key) const;
  std::vector<std::string> strings(const std::string& key) const;  // an array of strings; empty when absent
  const std::string& where() const { return where_; }

 private:
  [[noreturn]] void bad(const std::string& key, const std::string& what) const;
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace lq::io
