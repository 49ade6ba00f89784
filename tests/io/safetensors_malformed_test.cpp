// Malformed .safetensors files, built byte by byte: each must be refused with an lq::Error whose
// message names the file and the tensor or field at fault (never a crash or an out-of-bounds read).
#include <gtest/gtest.h>

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "st_test_util.h"
#include "test_paths.h"

namespace lq::test {
namespace {

namespace fs = std::filesystem;
using io::SafetensorsFile;

struct MalformedCase {
  std::string id;                    // test name suffix and file name
  std::string bytes;                 // the whole file
  std::vector<std::string> expect;   // substrings of the error message besides the file path
};

// gtest prints this instead of a hex dump when a case fails.
void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.id; }

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

std::vector<MalformedCase> malformed_cases() {
  const std::string w1 = entry("U8", "[1]", "[0,1]");
  return {
      {"file_shorter_than_length_field", "\x05\0\0", {"header length", "too short"}},
      {"header_length_over_limit", le64(100'000'001) + "{}", {"header length", "100000001", "exceeds the limit"}},
      {"header_length_past_end_of_file", le64(64) + "{}      ", {"header length", "64", "runs past the end of the file"}},
      {"zero_length_header", le64(0), {"header", "does not start with '{'"}},
      {"header_not_starting_with_brace", st_image("[1,2]"), {"header", "does not start with '{'"}},
      {"header_with_leading_space", st_image(" {}"), {"header", "does not start with '{'"}},
      {"json_syntax_error", st_image(R"({"w":{"dtype":"F32",)"), {"header", "invalid JSON", "after key 'w'"}},
      {"invalid_utf8_in_name", st_image("{\"\xff\xfe\":" + w1 + "}", "a"), {"header", "invalid JSON"}},
      {"duplicate_tensor_name", st_image(R"({"w":)" + w1 + R"(,"w":)" + entry("U8", "[1]", "[1,2]") + "}", "ab"),
       {"duplicate key 'w'"}},
      {"duplicate_field_in_entry", st_image(R"({"w":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "a"),
       {"duplicate key 'w'.'dtype'"}},
      {"duplicate_metadata_key", st_image(R"({"__metadata__":{"k":"a","k":"b"}})"), {"duplicate key '__metadata__'.'k'"}},
      {"nesting_too_deep", st_image(R"({"w":{"x":)" + std::string(40, '[') + std::string(40, ']') + "}}"),
       {"header", "nests deeper than", "'w'.'x'"}},
      {"entry_not_an_object", st_image(R"({"w":[1,2]})"), {"tensor 'w'", "entry is a JSON array, expected an object"}},
      {"missing_dtype", st_image(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "a"), {"tensor 'w'", "missing field 'dtype'"}},
      {"missing_data_offsets", st_image(R"({"w":{"dtype":"U8","shape":[1]}})", "a"), {"tensor 'w'", "missing field 'data_offsets'"}},
      {"dtype_not_a_string", st_image(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", "a"),
       {"tensor 'w'", "field 'dtype' is a JSON number"}},
      {"unknown_dtype", st_image(R"({"w":)" + entry("F17", "[1]", "[0,1]") + "}", "a"), {"tensor 'w'", "unknown dtype 'F17'"}},
      {"shape_not_an_array", st_image(R"({"w":)" + entry("U8", "3", "[0,3]") + "}", "abc"), {"tensor 'w'", "field 'shape' is a JSON number"}},
      {"negative_dimension", st_image(R"({"w":)" + entry("U8", "[-1]", "[0,1]") + "}", "a"), {"tensor 'w'", "field 'shape'", "negative or non-integer"}},
      {"fractional_dimension", st_image(R"({"w":)" + entry("U8", "[1.5]", "[0,1]") + "}", "a"), {"tensor 'w'", "negative or non-integer"}},
      {"element_count_overflow", st_image(R"({"w":)" + entry("F32", "[1099511627776,1099511627776,0]", "[0,0]") + "}"),
       {"tensor 'w'", "element count overflows 64 bits"}},
      {"byte_count_overflow", st_image(R"({"w":)" + entry("F64", "[4611686018427387904]", "[0,0]") + "}"),
       {"tensor 'w'", "byte count overflows 64 bits"}},
      {"data_offsets_wrong_length", st_image(R"({"w":)" + entry("U8", "[1]", "[0]") + "}", "a"), {"tensor 'w'", "field 'data_offsets'"}},
      {"data_offsets_not_integers", st_image(R"({"w":)" + entry("U8", "[1]", R"(["0","1"])") + "}", "a"),
       {"tensor 'w'", "field 'data_offsets' must be an array of two non-negative integers"}},
      {"data_offsets_reversed", st_image(R"({"w":)" + entry("U8", "[0]", "[4,0]") + "}", "abcd"), {"tensor 'w'", "begin 4 > end 0"}},
      {"shape_size_mismatch", st_image(R"({"w":)" + entry("F32", "[2]", "[0,4]") + "}", "abcd"),
       {"tensor 'w'", "is 8 bytes but field 'data_offsets' spans 4"}},
      {"truncated_data", st_image(R"({"w":)" + entry("F32", "[4]", "[0,16]") + "}", "abcd"),
       {"tensor 'w'", "runs past the data section (4 bytes)", "truncated"}},
      {"overlapping_tensors", st_image(R"({"a":)" + entry("U8", "[4]", "[0,4]") + R"(,"b":)" + entry("U8", "[2]", "[2,4]") + "}", "abcd"),
       {"tensor 'b'", "overlaps tensor 'a'"}},
      {"gap_between_tensors", st_image(R"({"a":)" + entry("U8", "[1]", "[0,1]") + R"(,"b":)" + entry("U8", "[2]", "[2,4]") + "}", "abcd"),
       {"tensor 'b'", "gap of 1 bytes after tensor 'a'"}},
      {"first_tensor_not_at_zero", st_image(R"({"a":)" + entry("U8", "[2]", "[2,4]") + "}", "abcd"),
       {"tensor 'a'", "gap of 2 bytes after the start of the data section"}},
      {"trailing_uncovered_bytes", st_image(R"({"a":)" + w1 + "}", "abcd"), {"data section", "3 trailing bytes after tensor 'a'"}},
      {"metadata_not_an_object", st_image(R"({"__metadata__":"pt"})"), {"__metadata__", "expected an object of strings"}},
      {"metadata_value_not_a_string", st_image(R"({"__metadata__":{"k":3}})"), {"__metadata__: key 'k'", "expected a string"}},
  };
}

class Malformed : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(Malformed, IsRejectedWithAMessageNamingFileAndField) {
  const MalformedCase& c = GetParam();
  const std::string path = write_bytes(scratch_dir("st_malformed_" + c.id) + "/" + c.id + ".safetensors", c.bytes);
  const std::string msg = error_of([&] { SafetensorsFile f(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
  for (const auto& want : c.expect) EXPECT_NE(msg.find(want), std::string::npos) << "missing '" << want << "' in: " << msg;
  // The in-memory parser (what the fuzzer drives) gives the same verdict.
  const std::string mem = error_of([&] {
    SafetensorsFile::parse_header(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size(), "in-memory");
  });
  EXPECT_NE(mem.find("in-memory"), std::string::npos) << mem;
}

INSTANTIATE_TEST_SUITE_P(Safetensors, Malformed, ::testing::ValuesIn(malformed_cases()),
                         [](const ::testing::TestParamInfo<MalformedCase>& i) { return i.param.id; });

TEST(SafetensorsMalformed, CasesAreDistinct) {
  const auto cases = malformed_cases();
  EXPECT_GE(cases.size(), 15u);
  for (size_t i = 0; i < cases.size(); ++i)
    for (size_t j = i + 1; j < cases.size(); ++j) EXPECT_NE(cases[i].bytes, cases[j].bytes) << cases[i].id << " vs " << cases[j].id;
}

// Edge cases that are valid and must stay valid: the checks above must not be over-eager.
TEST(SafetensorsMalformed, AcceptsEdgeCasesTheFormatAllows) {
  const std::string dir = scratch_dir("st_edge_valid");
  const std::string two_empty_at_same_offset =
      st_image(R"({"a":)" + entry("U8", "[0]", "[0,0]") + R"(,"b":)" + entry("F32", "[3,0]", "[0,0]") + R"(,"c":)" +
               entry("U8", "[2]", "[0,2]") + "}", "xy");
  const std::string unknown_extra_field =  // ignored, as the reference implementation does
      st_image(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"note":{"x":[1]}}})", "a");
  const std::string empty = st_image("{}");
  for (const auto& [name, bytes] : {std::pair{"zero_size", two_empty_at_same_offset}, {"extra_field", unknown_extra_field}, {"empty", empty}}) {
    const std::string path = write_bytes(dir + "/" + name + ".safetensors", bytes);
    EXPECT_EQ(error_of([&] { SafetensorsFile f(path); }), "<no error>") << name;
  }
  io::SafetensorsFile f(dir + "/zero_size.safetensors");
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.info("b").shape, (std::vector<int64_t>{3, 0}));
}

TEST(SafetensorsMalformed, MissingFileAndDirectoryAreNamed) {
  const std::string dir = scratch_dir("st_open_errors");
  const std::string missing = dir + "/nope.safetensors";
  std::string msg = error_of([&] { SafetensorsFile f(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
  msg = error_of([&] { SafetensorsFile f(dir); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
}

TEST(SafetensorsMalformed, UnknownTensorAndBadRowRangeAreNamed) {
  const std::string path = write_bytes(scratch_dir("st_lookup_errors") + "/m.safetensors",
                                       st_image(R"({"w":)" + entry("F32", "[2,2]", "[0,16]") + R"(,"i":)" +
                                                entry("I32", "[1]", "[16,20]") + "}", std::string(20, '\0')));
  SafetensorsFile f(path);
  std::string msg = error_of([&] { f.info("nope"); });
  EXPECT_NE(msg.find(path + ": tensor 'nope'"), std::string::npos) << msg;
  std::vector<float> out(8);
  msg = error_of([&] { f.read_rows_f32(f.info("w"), 1, 3, out.data()); });
  EXPECT_NE(msg.find(path + ": tensor 'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row range [1, 3)"), std::string::npos) << msg;
  msg = error_of([&] { f.read_rows_f32(f.info("w"), -1, 1, out.data()); });
  EXPECT_NE(msg.find("row range [-1, 1)"), std::string::npos) << msg;
  msg = error_of([&] { f.read_f32("i"); });
  EXPECT_NE(msg.find(path + ": tensor 'i'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot convert dtype I32"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lq::test
