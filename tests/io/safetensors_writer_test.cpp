// SafetensorsWriter: round trips through our reader for every dtype family, exact bytes against
// the reference implementation's published example, chunked writes, and atomicity (nothing at
// the final path, and no temporary left behind, unless finish() succeeded).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "st_test_util.h"
#include "test_paths.h"

namespace lq::test {
namespace {

namespace fs = std::filesystem;
using io::DType;
using io::SafetensorsFile;
using io::SafetensorsWriter;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// The reference implementation's serialization test: "attn.0", F32 [1,2,3] holding 0..5 gives a
// 64-byte header and exactly these bytes. Same key order, no padding needed.
TEST(SafetensorsWriter, MatchesReferenceImplementationBytes) {
  const std::string path = scratch_dir("st_writer_ref") + "/ref.safetensors";
  const std::vector<float> v{0, 1, 2, 3, 4, 5};
  SafetensorsWriter w(path);
  w.declare("attn.0", DType::F32, {1, 2, 3});
  w.write(v.data(), 24);
  w.finish();
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);
  EXPECT_EQ(slurp(path), le64(64) + header + bytes_of(v));
}

TEST(SafetensorsWriter, EmptyFileMatchesReferenceBytes) {
  const std::string path = scratch_dir("st_writer_empty") + "/e.safetensors";
  SafetensorsWriter w(path);
  w.finish();
  EXPECT_EQ(slurp(path), le64(8) + "{}      ");  // the reference pads "{}" to 8 bytes with spaces
}

TEST(SafetensorsWriter, RoundTripsEveryDtypeWithMetadataAndZeroSizeTensors) {
  const std::string path = scratch_dir("st_writer_roundtrip") + "/rt.safetensors";
  const std::vector<float> f32{1.5f, -2.0f, 3.25f, 1e-30f, -0.0f, 7.0f};
  const std::vector<uint16_t> bf16{0x3F80, 0xC040, 0x7F80, 0x0001};
  const std::vector<uint16_t> f16{0x3C00, 0xC000, 0x7BFF};
  const std::vector<int32_t> i32{-7, 0, 2147483647};
  const std::vector<uint8_t> u8{1, 2, 3, 4, 5};
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "round \"trip\" \xc3\xa9"}};
  {
    SafetensorsWriter w(path, meta);
    w.declare("f32", DType::F32, {2, 3});
    w.declare("empty", DType::F32, {0, 4});
    w.declare("bf16", DType::BF16, {4});
    w.declare("f16", DType::F16, {3, 1});
    w.declare("scalar_i32_first", DType::I32, {3});
    w.declare("u8", DType::U8, {5});
    w.declare("empty_last", DType::BF16, {2, 0});
    w.write(f32.data(), 24);
    w.write(bf16.data(), 8);
    w.write(f16.data(), 6);
    w.write(i32.data(), 12);
    w.write(u8.data(), 5);
    w.finish();
  }
  SafetensorsFile f(path);
  EXPECT_EQ(f.data_offset() % 8, 0u);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), 7u);
  auto check = [&](const char* name, DType dt, std::vector<int64_t> shape, const std::string& bytes) {
    const auto& t = f.info(name);
    EXPECT_EQ(t.dtype, dt) << name;
    EXPECT_EQ(t.shape, shape) << name;
    auto b = f.bytes(t);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), bytes) << name;
  };
  check("f32", DType::F32, {2, 3}, bytes_of(f32));
  check("empty", DType::F32, {0, 4}, "");
  check("bf16", DType::BF16, {4}, bytes_of(bf16));
  check("f16", DType::F16, {3, 1}, bytes_of(f16));
  check("scalar_i32_first", DType::I32, {3}, bytes_of(i32));
  check("u8", DType::U8, {5}, bytes_of(u8));
  check("empty_last", DType::BF16, {2, 0}, "");
  EXPECT_EQ(f.read_f32("f32"), f32);
  // The header lists __metadata__ first and the tensors in data order.
  const std::string text = slurp(path).substr(8, f.data_offset() - 8);
  EXPECT_EQ(text.rfind(R"({"__metadata__":)", 0), 0u) << text;
  EXPECT_LT(text.find("\"f32\""), text.find("\"bf16\""));
  EXPECT_LT(text.find("\"bf16\""), text.find("\"u8\""));
}

TEST(SafetensorsWriter, ChunkedWritesMaySplitAnywhereAndSpanTensors) {
  const std::string path = scratch_dir("st_writer_chunks") + "/c.safetensors";
  std::vector<uint8_t> all(3 * 4 + 7 * 2 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint8_t(i * 37 + 11);
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::F32, {3});
    w.declare("gap", DType::U8, {0});
    w.declare("b", DType::BF16, {7});
    w.declare("c", DType::U8, {5});
    size_t pos = 0;
    for (size_t step : {1, 0, 5, 9, 2, 14}) {  // 1 + 5 + 9 + 2 + 14 = 31 = all.size()
      w.write(all.data() + pos, step);
      pos += step;
    }
    ASSERT_EQ(pos, all.size());
    w.finish();
  }
  SafetensorsFile f(path);
  std::string joined;
  for (const auto& t : f.tensors()) joined.append(reinterpret_cast<const char*>(f.bytes(t).data()), t.nbytes());
  EXPECT_EQ(joined, bytes_of(all));
}

TEST(SafetensorsWriter, DestroyedBeforeFinishLeavesNoFileAndKeepsTheOldOne) {
  const std::string dir = scratch_dir("st_writer_abort");
  const std::string path = dir + "/model.safetensors";
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::F32, {4});
    const float x[2] = {1, 2};
    w.write(x, sizeof x);
    EXPECT_TRUE(fs::exists(w.temp_path()));
    EXPECT_FALSE(fs::exists(path));
  }
  EXPECT_TRUE(dir_entries(dir).empty()) << "left behind: " << dir_entries(dir)[0];

  // An earlier complete file at the final path survives an abandoned rewrite untouched.
  write_bytes(path, "old contents");
  try {
    SafetensorsWriter w(path);
    w.declare("a", DType::U8, {2});
    w.write("x", 1);
    throw std::runtime_error("simulated failure while producing the data");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(slurp(path), "old contents");
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"model.safetensors"});
}

TEST(SafetensorsWriter, FinishWithAMissingTensorErrorsAndLeavesNothing) {
  const std::string dir = scratch_dir("st_writer_incomplete");
  const std::string path = dir + "/m.safetensors";
  {
    SafetensorsWriter w(path);
    w.declare("a", DType::U8, {2});
    w.declare("b", DType::F32, {2});
    w.write("xy", 2);
    w.write("1234", 4);  // half of b
    const std::string msg = error_of([&] { w.finish(); });
    EXPECT_NE(msg.find(path + ": tensor 'b'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("only 4 of 8 bytes"), std::string::npos) << msg;
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

TEST(SafetensorsWriter, MisuseIsReportedWithTheTensorName) {
  const std::string dir = scratch_dir("st_writer_misuse");
  const std::string path = dir + "/m.safetensors";
  SafetensorsWriter w(path);
  w.declare("a", DType::U8, {2});
  EXPECT_NE(error_of([&] { w.declare("a", DType::U8, {1}); }).find("tensor 'a'"), std::string::npos);
  EXPECT_NE(error_of([&] { w.declare("neg", DType::U8, {2, -1}); }).find("tensor 'neg'"), std::string::npos);
  EXPECT_NE(error_of([&] { w.declare("__metadata__", DType::U8, {1}); }).find("not a valid tensor name"), std::string::npos);
  EXPECT_NE(error_of([&] { w.declare("huge", DType::F64, {int64_t(1) << 62, 4}); }).find("overflow"), std::string::npos);
  w.write("ab", 2);
  EXPECT_NE(error_of([&] { w.declare("late", DType::U8, {1}); }).find("after writing started"), std::string::npos);
  EXPECT_NE(error_of([&] { w.write("c", 1); }).find("beyond the declared tensors"), std::string::npos);
  w.finish();
  EXPECT_NE(error_of([&] { w.write("c", 1); }).find("already finished"), std::string::npos);
  EXPECT_NE(error_of([&] { w.finish(); }).find("already finished"), std::string::npos);
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"m.safetensors"});
}

TEST(SafetensorsWriter, InvalidUtf8NameIsAnErrorNotACrash) {
  const std::string dir = scratch_dir("st_writer_utf8");
  {
    SafetensorsWriter w(dir + "/m.safetensors");
    w.declare("bad\xff", DType::U8, {1});
    const std::string msg = error_of([&] { w.write("a", 1); });
    EXPECT_NE(msg.find("cannot encode the header"), std::string::npos) << msg;
  }
  EXPECT_TRUE(dir_entries(dir).empty());
}

}  // namespace
}  // namespace lq::test
