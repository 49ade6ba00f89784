#include "io/json_fields.h"

#include <cmath>
#include <fstream>
#include <limits>

#include "io/error.h"

namespace lq::io {

using json = nlohmann::json;

json read_json_object(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, "cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail(path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, std::string("expected a JSON object, got a JSON ") + j.type_name());
  return j;
}

JsonFields::JsonFields(const json& j, std::string where) : j_(j), where_(std::move(where)) {
  if (!j_.is_object()) fail(where_, std::string("expected a JSON object, got a JSON ") + j_.type_name());
}

void JsonFields::bad(const std::string& key, const std::string& what) const { fail(where_, "key '" + key + "' " + what); }

bool JsonFields::has(const std::string& key) const {
  const auto it = j_.find(key);
  return it != j_.end() && !it->is_null();
}

int64_t JsonFields::integer(const std::string& key, int64_t lo, int64_t hi, std::optional<int64_t> fallback) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    fail(where_, "missing key '" + key + "'");
  }
  return integer_value(j_.at(key), key, lo, hi);
}

int64_t JsonFields::integer_value(const json& v, const std::string& key, int64_t lo, int64_t hi) const {
  const std::string range = "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()) || int64_t(u) > hi || int64_t(u) < lo) bad(key, range + ", got " + v.dump());
    return int64_t(u);
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) bad(key, range + ", got " + v.dump());
    return x;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= double(lo) && d <= double(hi)) return int64_t(d);
    bad(key, range + ", got " + v.dump());
  }
  bad(key, range + ", got a JSON " + std::string(v.type_name()));
}

double JsonFields::real(const std::string& key, std::optional<double> fallback, bool positive) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    fail(where_, "missing key '" + key + "'");
  }
  const json& v = j_.at(key);
  if (!v.is_number()) bad(key, std::string("must be a number, got a JSON ") + v.type_name());
  const double d = v.get<double>();
  if (!std::isfinite(d) || (positive && !(d > 0)))
    bad(key, std::string("must be a finite") + (positive ? " positive" : "") + " number, got " + v.dump());
  return d;
}

bool JsonFields::boolean(const std::string& key, std::optional<bool> fallback) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    fail(where_, "missing key '" + key + "'");
  }
  const json& v = j_.at(key);
  if (!v.is_boolean()) bad(key, "must be true or false, got " + v.dump());
  return v.get<bool>();
}

std::string JsonFields::string(const std::string& key, std::optional<std::string> fallback) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    fail(where_, "missing key '" + key + "'");
  }
  const json& v = j_.at(key);
  if (!v.is_string()) bad(key, std::string("must be a string, got a JSON ") + v.type_name());
  return v.get<std::string>();
}

const json* JsonFields::object(const std::string& key) const {
  if (!has(key)) return nullptr;
  const json& v = j_.at(key);
  if (!v.is_object()) bad(key, std::string("must be a JSON object, got a JSON ") + v.type_name());
  return &v;
}

const json* JsonFields::array(const std::string& key) const {
  if (!has(key)) return nullptr;
  const json& v = j_.at(key);
  if (!v.is_array()) bad(key, std::string("must be a JSON array, got a JSON ") + v.type_name());
  return &v;
}

std::vector<std::string> JsonFields::strings(const std::string& key) const {
  std::vector<std::string> out;
  const json* a = array(key);
  if (!a) return out;
  for (const auto& v : *a) {
    if (!v.is_string()) bad(key, std::string("must be an array of strings, has a JSON ") + v.type_name());
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace lq::io
