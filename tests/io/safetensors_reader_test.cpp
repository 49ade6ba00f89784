// Reader: dtype conversion (F32->bf16 with round-to-nearest-even, BF16/F16->f32), row ranges,
// misaligned data sections, sharded directories and their errors, bounded memory with drop(),
// the lance-mini fixture, and a replay of the fuzzing seed corpus.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "io/safetensors.h"
#include "st_test_util.h"
#include "test_paths.h"

namespace lq::test {
namespace {

namespace fs = std::filesystem;
using io::DType;
using io::SafetensorsFile;
using io::SafetensorsWriter;
using io::TensorStore;

float f32_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
void write_tensor_file(const std::string& path, const std::string& name, DType dt, std::vector<int64_t> shape,
                       const std::vector<T>& v) {
  SafetensorsWriter w(path);
  w.declare(name, dt, std::move(shape));
  w.write(v.data(), v.size() * sizeof(T));
  w.finish();
}

// Expected bf16 bit patterns worked out by hand: bf16 keeps 7 mantissa bits, so above 1.0 its
// spacing is 2^-7 and 1 + 2^-8 is exactly half-way.
TEST(SafetensorsReader, F32ToBf16RoundsToNearestEven) {
  const std::vector<float> in{
      1.0f,
      1.0f + 0x1p-8f,              // tie between 0x3F80 and 0x3F81 -> even 0x3F80
      1.0f + 0x1p-7f + 0x1p-8f,    // tie between 0x3F81 and 0x3F82 -> even 0x3F82
      1.0f + 0x1p-8f + 0x1p-20f,   // just above the tie -> 0x3F81
      1.0f + 0x1p-8f - 0x1p-20f,   // just below the tie -> 0x3F80
      -3.0f,                       // exact: 0xC040
      f32_of_bits(0x7F7FFFFF),     // FLT_MAX rounds up to +inf 0x7F80
      INFINITY,
      f32_of_bits(0x7FC00001),     // NaN stays NaN
  };
  const std::vector<uint16_t> want{0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x3F80, 0xC040, 0x7F80, 0x7F80};
  const std::string path = scratch_dir("st_conv_bf16") + "/x.safetensors";
  write_tensor_file(path, "x", DType::F32, {3, 3}, in);
  SafetensorsFile f(path);
  std::vector<uint16_t> out(9);
  f.read_rows_bf16(f.info("x"), 0, 3, out.data());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out[i], want[i]) << "element " << i;
  EXPECT_EQ(out[8] & 0x7F80, 0x7F80);
  EXPECT_NE(out[8] & 0x007F, 0) << "NaN became infinity";
}

TEST(SafetensorsReader, Bf16AndF16ToF32AreExact) {
  const std::string dir = scratch_dir("st_conv_f32");
  const std::vector<uint16_t> bf16{0x3F80, 0xC040, 0x0001, 0x7F80, 0x8000};
  const std::vector<float> bf16_want{1.0f, -3.0f, 0x1p-133f, INFINITY, -0.0f};
  const std::vector<uint16_t> f16{0x3C00, 0xC000, 0x0001, 0x7BFF, 0x7C00, 0x3555};
  const std::vector<float> f16_want{1.0f, -2.0f, 0x1p-24f, 65504.0f, INFINITY, 0x1.554p-2f};
  write_tensor_file(dir + "/b.safetensors", "b", DType::BF16, {5}, bf16);
  write_tensor_file(dir + "/h.safetensors", "h", DType::F16, {2, 3}, f16);
  EXPECT_EQ(SafetensorsFile(dir + "/b.safetensors").read_f32("b"), bf16_want);
  EXPECT_EQ(SafetensorsFile(dir + "/h.safetensors").read_f32("h"), f16_want);
  // F16 -> bf16: 1 + 2^-8 (0x3C04) is a bf16 tie -> even; 1 + 3*2^-8 (0x3C0C) -> 0x3F82.
  const std::vector<uint16_t> f16b{0x3C00, 0x3C04, 0x3C0C, 0x3C08, 0xC000};
  write_tensor_file(dir + "/hb.safetensors", "hb", DType::F16, {5}, f16b);
  SafetensorsFile hb(dir + "/hb.safetensors");
  std::vector<uint16_t> out(5);
  hb.read_rows_bf16(hb.info("hb"), 0, 5, out.data());
  EXPECT_EQ(out, (std::vector<uint16_t>{0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000}));
}

TEST(SafetensorsReader, RowRangesReadTheRightRows) {
  const std::string path = scratch_dir("st_rows") + "/r.safetensors";
  std::vector<float> v(5 * 3);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.5f;
  write_tensor_file(path, "m", DType::F32, {5, 3}, v);
  TensorStore store(path);
  std::vector<float> out(9, -1.0f);
  store.read_rows_f32("m", 1, 4, out.data());
  for (size_t i = 0; i < 9; ++i) EXPECT_EQ(out[i], v[3 + i]);
  std::vector<uint16_t> ob(3);
  store.read_rows_bf16("m", 4, 5, ob.data());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(float(f32_of_bits(uint32_t(ob[i]) << 16)), v[12 + i]);  // 6.0, 6.5, 7.0 are exact
  store.read_rows_f32("m", 5, 5, nullptr);  // an empty range touches nothing
}

// Files from other writers need not pad the header: here the data section starts at an odd
// address, which must not turn into a misaligned float/uint16 access.
TEST(SafetensorsReader, MisalignedDataSectionIsReadCorrectly) {
  std::vector<float> f(5000);
  for (size_t i = 0; i < f.size(); ++i) f[i] = float(i) - 2500.25f;
  std::string data(reinterpret_cast<const char*>(f.data()), f.size() * 4);
  const uint16_t bf[3] = {0x3F80, 0x4000, 0xBF80};
  data.append(reinterpret_cast<const char*>(bf), 6);
  const std::string header = R"({"f":{"dtype":"F32","shape":[5000],"data_offsets":[0,20000]},)"
                             R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[20000,20006]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const std::string path = write_bytes(scratch_dir("st_misaligned") + "/m.safetensors", st_image(header, data, false));
  SafetensorsFile file(path);
  ASSERT_NE(file.data_offset() % 4, 0u);
  EXPECT_EQ(file.read_f32("f"), f);
  EXPECT_EQ(file.read_f32("b"), (std::vector<float>{1.0f, 2.0f, -1.0f}));
  std::vector<uint16_t> out(5000);
  file.read_rows_bf16(file.info("f"), 0, 5000, out.data());
  for (size_t i = 0; i < f.size(); ++i)  // these values need at most 16 significant bits: check RNE loosely
    ASSERT_NEAR(f32_of_bits(uint32_t(out[i]) << 16), f[i], std::fabs(f[i]) * 0x1p-8f) << i;
}

// ---- sharded directories ------------------------------------------------------------------
struct ShardedDir {
  std::string dir;
  explicit ShardedDir(const std::string& name) : dir(scratch_dir(name)) {
    SafetensorsWriter a(dir + "/model-00001-of-00002.safetensors");
    a.declare("x.weight", DType::F32, {2, 2});
    a.declare("y.weight", DType::BF16, {2});
    const float xv[4] = {1, 2, 3, 4};
    const uint16_t yv[2] = {0x4040, 0xC080};  // 3.0, -4.0
    a.write(xv, 16);
    a.write(yv, 4);
    a.finish();
    SafetensorsWriter b(dir + "/model-00002-of-00002.safetensors");
    b.declare("z.weight", DType::F16, {1, 3});
    const uint16_t zv[3] = {0x3C00, 0x4000, 0x4200};  // 1, 2, 3
    b.write(zv, 6);
    b.finish();
  }
  std::string index(const std::string& weight_map) const {
    return write_bytes(dir + "/model.safetensors.index.json",
                       R"({"metadata":{"total_size":26},"weight_map":)" + weight_map + "}");
  }
  static std::string standard_map() {
    return R"({"x.weight":"model-00001-of-00002.safetensors","y.weight":"model-00001-of-00002.safetensors",)"
           R"("z.weight":"model-00002-of-00002.safetensors"})";
  }
};

TEST(SafetensorsSharded, ReadsTensorsAcrossShards) {
  ShardedDir d("st_sharded_ok");
  d.index(ShardedDir::standard_map());
  TensorStore s(d.dir);
  EXPECT_EQ(s.num_files(), 2u);
  EXPECT_EQ(s.names(), (std::vector<std::string>{"x.weight", "y.weight", "z.weight"}));
  EXPECT_EQ(s.read_f32("x.weight"), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(s.read_f32("y.weight"), (std::vector<float>{3, -4}));
  EXPECT_EQ(s.read_f32("z.weight"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(s.total_tensor_bytes(), 26u);
  EXPECT_NE(s.file_of("z.weight").path().find("00002-of-00002"), std::string::npos);
  s.drop("x.weight");  // harmless on a tiny tensor; must not invalidate later reads
  EXPECT_EQ(s.read_f32("x.weight"), (std::vector<float>{1, 2, 3, 4}));
  std::string msg = error_of([&] { s.read_f32("nope"); });
  EXPECT_NE(msg.find("tensor 'nope'"), std::string::npos) << msg;
}

void expect_store_error(const std::string& dir, const std::vector<std::string>& want) {
  const std::string msg = error_of([&] { TensorStore s(dir); });
  for (const auto& w : want) EXPECT_NE(msg.find(w), std::string::npos) << "missing '" << w << "' in: " << msg;
}

TEST(SafetensorsSharded, MissingShardFileIsNamed) {
  ShardedDir d("st_sharded_missing");
  const std::string idx = d.index(R"({"x.weight":"model-00001-of-00002.safetensors","q.weight":"model-00003-of-00003.safetensors"})");
  expect_store_error(d.dir, {idx, "tensor 'q.weight'", "shard 'model-00003-of-00003.safetensors' does not exist"});
}

TEST(SafetensorsSharded, TensorInTwoShardsIsAnError) {
  ShardedDir d("st_sharded_twice");
  {  // a second shard that also holds x.weight
    SafetensorsWriter b(d.dir + "/model-00002-of-00002.safetensors");
    b.declare("z.weight", DType::F16, {1, 3});
    b.declare("x.weight", DType::F32, {2, 2});
    b.write(std::string(6 + 16, '\0').data(), 22);
    b.finish();
  }
  d.index(ShardedDir::standard_map());
  expect_store_error(d.dir, {"model-00002-of-00002.safetensors: tensor 'x.weight'", "also present in shard",
                             "model-00001-of-00002.safetensors"});
}

TEST(SafetensorsSharded, IndexListsATensorTheShardLacks) {
  ShardedDir d("st_sharded_lacks");
  d.index(R"({"x.weight":"model-00001-of-00002.safetensors","y.weight":"model-00001-of-00002.safetensors",)"
          R"("z.weight":"model-00002-of-00002.safetensors","w.weight":"model-00002-of-00002.safetensors"})");
  expect_store_error(d.dir, {"model-00002-of-00002.safetensors: tensor 'w.weight'", "missing from the shard"});
}

TEST(SafetensorsSharded, ShardTensorMissingFromIndex) {
  ShardedDir d("st_sharded_unlisted");
  d.index(R"({"x.weight":"model-00001-of-00002.safetensors","z.weight":"model-00002-of-00002.safetensors"})");
  expect_store_error(d.dir, {"model-00001-of-00002.safetensors: tensor 'y.weight'", "not listed in the index"});
}

TEST(SafetensorsSharded, DuplicateKeyInWeightMap) {
  ShardedDir d("st_sharded_dupkey");
  const std::string idx = d.index(R"({"x.weight":"model-00001-of-00002.safetensors","x.weight":"model-00002-of-00002.safetensors"})");
  expect_store_error(d.dir, {idx, "duplicate key 'weight_map'.'x.weight'"});
}

TEST(SafetensorsSharded, MalformedIndexes) {
  ShardedDir d("st_sharded_badidx");
  std::string idx = write_bytes(d.dir + "/model.safetensors.index.json", R"({"weight_map":)");
  expect_store_error(d.dir, {idx, "invalid JSON"});
  idx = write_bytes(d.dir + "/model.safetensors.index.json", R"({"metadata":{}})");
  expect_store_error(d.dir, {idx, "weight_map", "no 'weight_map' object"});
  idx = d.index(R"({"x.weight":7})");
  expect_store_error(d.dir, {idx, "tensor 'x.weight'", "expected a shard file name"});
  idx = d.index(R"({"x.weight":"../outside.safetensors"})");
  expect_store_error(d.dir, {idx, "tensor 'x.weight'", "must be a relative path inside"});
  idx = d.index(R"({"x.weight":"/etc/passwd"})");
  expect_store_error(d.dir, {idx, "must be a relative path inside"});
  // A broken shard reports the shard's own path and field.
  write_bytes(d.dir + "/model-00002-of-00002.safetensors", le64(3) + "{}");
  d.index(ShardedDir::standard_map());
  expect_store_error(d.dir, {d.dir + "/model-00002-of-00002.safetensors: header length"});
}

TEST(SafetensorsSharded, DirectoryWithoutModelIsNamed) {
  const std::string dir = scratch_dir("st_store_empty_dir");
  expect_store_error(dir, {dir, "neither model.safetensors nor model.safetensors.index.json"});
}

// ---- bounded memory -----------------------------------------------------------------------
size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t total = 0, resident = 0;
  statm >> total >> resident;
  return resident * size_t(::sysconf(_SC_PAGESIZE));
}

// Streams a 64 MiB file tensor by tensor, in row blocks, the way the quantizer does. With drop()
// after each tensor the resident set must stay within a few tensors; without it, it grows with
// the file (the control that shows the measurement can fail).
TEST(SafetensorsReader, DropKeepsResidentMemoryBoundedWhileStreaming) {
  constexpr int kTensors = 16, kRows = 1024, kCols = 1024;  // 4 MiB of F32 each
  constexpr size_t kTensorBytes = size_t(kRows) * kCols * 4;
  const std::string path = scratch_dir("st_stream_rss") + "/big.safetensors";
  {
    std::vector<float> block(size_t(kRows) * kCols);
    SafetensorsWriter w(path);
    for (int t = 0; t < kTensors; ++t) w.declare(std::string("t").append(std::to_string(t)), DType::F32, {kRows, kCols});
    for (int t = 0; t < kTensors; ++t) {
      for (size_t i = 0; i < block.size(); ++i) block[i] = float(t * 7 + int(i % 13));
      w.write(block.data(), kTensorBytes);
    }
    w.finish();
  }
  std::vector<float> rows(64 * size_t(kCols), 0.0f);  // touched now, so it is in the baseline
  auto stream = [&](bool drop) {
    SafetensorsFile f(path);
    const size_t base = resident_bytes();
    size_t peak = 0;
    double checksum = 0;
    for (const auto& t : f.tensors()) {
      for (int r = 0; r < kRows; r += 64) {
        f.read_rows_f32(t, r, r + 64, rows.data());
        checksum += rows[0];
      }
      if (drop) f.drop(t);
      peak = std::max(peak, resident_bytes() > base ? resident_bytes() - base : 0);
    }
    EXPECT_GT(checksum, 0.0);
    return peak;
  };
  const size_t with_drop = stream(true);
  const size_t without_drop = stream(false);
  std::printf("resident growth streaming 64 MiB: %.1f MiB with drop(), %.1f MiB without\n", with_drop / 1048576.0,
              without_drop / 1048576.0);
  EXPECT_LT(with_drop, 3 * kTensorBytes) << "resident growth with drop(): " << with_drop / 1048576 << " MiB";
  EXPECT_GT(without_drop, 10 * kTensorBytes) << "control: growth without drop(): " << without_drop / 1048576 << " MiB";
}

// ---- fixtures -----------------------------------------------------------------------------
// latent_pos_embed.pos_embed is a fixed sin-cos table (fixture README): row r*64 + c (frame 0) is
// [t-part(84) | h-part(84) | w-part(88)], each part [sin(p*w_k), cos(p*w_k)] with w_k = 10000^(-k/(D/2)).
double lpe_value(int row, int col) {
  const int r = row / 64, c = row % 64;
  const int dims[3] = {84, 84, 88};
  const int pos[3] = {0, r, c};
  for (int part = 0; part < 3; ++part) {
    const int D = dims[part];
    if (col < D) {
      const int half = D / 2, k = col % half;
      const double w = std::pow(10000.0, -double(k) / half);
      return col < half ? std::sin(pos[part] * w) : std::cos(pos[part] * w);
    }
    col -= D;
  }
  return NAN;
}

TEST(SafetensorsFixture, LanceMiniOpensAndAKnownTensorReadsBack) {
  LQ_REQUIRE_SHARED();
  TensorStore s(lance_mini_dir());
  EXPECT_EQ(s.num_files(), 1u);
  ASSERT_EQ(s.names().size(), 125u);
  for (const auto& n : s.names()) EXPECT_EQ(s.info(n).dtype, DType::F32) << n;
  const auto& t = s.info("latent_pos_embed.pos_embed");
  ASSERT_EQ(t.shape, (std::vector<int64_t>{4096, 256}));
  std::vector<float> rows(3 * 256);
  s.read_rows_f32("latent_pos_embed.pos_embed", 1000, 1003, rows.data());  // r = 15, c = 40..42
  double max_err = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 256; ++j) max_err = std::max(max_err, std::fabs(rows[i * 256 + j] - lpe_value(1000 + i, j)));
  EXPECT_LT(max_err, 1e-6);  // float64 table stored as F32: only the final rounding differs
  // The norm weights exist with the documented shape.
  EXPECT_EQ(s.info("language_model.model.norm.weight").shape, (std::vector<int64_t>{256}));
}

// Every seed of the fuzzing corpus goes through the in-memory parser: valid_* are accepted,
// bad_* rejected with lq::Error, nothing else may happen.
TEST(SafetensorsFuzzCorpus, ReplaysEverySeed) {
  const fs::path dir = fs::path(LQ_SOURCE_DIR) / "tools/fuzz/corpus";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string bytes = ss.str();
    const std::string name = e.path().filename().string();
    const std::string msg = error_of([&] {
      SafetensorsFile::parse_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
    });
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_EQ(msg, "<no error>") << name;
    } else if (name.rfind("bad_", 0) == 0) {
      EXPECT_NE(msg.find(name), std::string::npos) << name << ": " << msg;
    }
    ++n;
  }
  EXPECT_GE(n, 20);
}

}  // namespace
}  // namespace lq::test
