// The torch.save reader on a file torch 2.9 wrote (tools/gen_wan_vae_golden.py: f32, an f16 view with a
// storage offset, bf16, a transposed f64 view, an nn.Parameter, nested dicts, a non-tensor entry) with
// values computed here from their arange definitions; and on malformed archives: truncations, a
// compressed entry, a forbidden global, a storage whose size disagrees, a tensor beyond its storage,
// a legacy (non-zip) file, and random byte corruption (each must be a clean lq::Error, never a crash).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "io/error.h"
#include "io/torch_checkpoint.h"

namespace {

using lq::io::TorchCheckpoint;

const std::string kSmall = std::string(LQ_SOURCE_DIR) + "/tests/io/data/torch_save_small.pth";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(TorchCheckpoint, ReadsEveryTensorKind) {
  const TorchCheckpoint c(kSmall);
  EXPECT_EQ(c.names(), (std::vector<std::string>{"extra.scale", "model.a.weight", "model.b.gamma", "model.c", "model.d",
                                                 "model.e", "model.p"}));
  // a.weight = arange(6).reshape(2, 3) - 2.5, f32
  EXPECT_EQ(c.info("model.a.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c.read_f32("model.a.weight"), (std::vector<float>{-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f}));
  // b.gamma = full((4, 1, 1, 1), 0.75)
  EXPECT_EQ(c.info("model.b.gamma").shape, (std::vector<int64_t>{4, 1, 1, 1}));
  EXPECT_EQ(c.read_f32("model.b.gamma"), std::vector<float>(4, 0.75f));
  // c = arange(10).half()[2:6]: an f16 view at storage offset 2
  EXPECT_EQ(c.info("model.c").dtype, lq::io::DType::F16);
  EXPECT_EQ(c.info("model.c").storage_offset, 2);
  EXPECT_EQ(c.read_f32("model.c"), (std::vector<float>{2, 3, 4, 5}));
  // d = (arange(3) * 0.5 - 1).bfloat16()
  EXPECT_EQ(c.info("model.d").dtype, lq::io::DType::BF16);
  EXPECT_EQ(c.read_f32("model.d"), (std::vector<float>{-1.0f, -0.5f, 0.0f}));
  // e = (arange(6, f64).reshape(2, 3) / 4).t(): shape [3, 2], strides [1, 3]
  const auto& e = c.info("model.e");
  EXPECT_EQ(e.dtype, lq::io::DType::F64);
  EXPECT_EQ(e.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(e.stride, (std::vector<int64_t>{1, 3}));
  EXPECT_FALSE(e.contiguous());
  EXPECT_EQ(c.read_f32("model.e"), (std::vector<float>{0.0f, 0.75f, 0.25f, 1.0f, 0.5f, 1.25f}));
  EXPECT_THROW(c.bytes("model.e"), lq::Error);
  // p = Parameter(arange(5) * -1)
  EXPECT_EQ(c.read_f32("model.p"), (std::vector<float>{0, -1, -2, -3, -4}));
  EXPECT_EQ(c.read_f32("extra.scale"), (std::vector<float>{2, 3}));
  // bytes() of a contiguous f32 tensor is its storage slice.
  const auto b = c.bytes("model.a.weight");
  ASSERT_EQ(b.size(), 24u);
  float first;
  std::memcpy(&first, b.data(), 4);
  EXPECT_EQ(first, -2.5f);
  EXPECT_THROW(c.info("model.missing"), lq::Error);
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle, const std::string& what) {
  try {
    TorchCheckpoint::from_memory(bytes.data(), bytes.size(), "mutated.pth");
    ADD_FAILURE() << what << ": accepted";
  } catch (const lq::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
  }
}

size_t find(const std::vector<uint8_t>& v, const std::string& s, size_t from = 0) {
  const auto it = std::search(v.begin() + long(from), v.end(), s.begin(), s.end());
  return it == v.end() ? std::string::npos : size_t(it - v.begin());
}

TEST(TorchCheckpoint, RefusesMalformedArchives) {
  const auto good = read_bytes(kSmall);
  ASSERT_GT(good.size(), 1000u);
  {
    auto b = good;  // another callable than the allowed ones: never executed, named in the error
    const size_t p = find(b, "collections\nOrderedDict");
    ASSERT_NE(p, std::string::npos);
    std::memcpy(&b[p], "posixpath00\nOrderedDict", 23);
    expect_error(b, "refusing to call posixpath00.OrderedDict", "foreign global");
  }
  {
    auto b = good;  // central directory says "deflated"
    const size_t cd = find(b, std::string("PK\x01\x02", 4));
    ASSERT_NE(cd, std::string::npos);
    b[cd + 10] = 8;
    expect_error(b, "compressed", "compressed entry");
  }
  {
    auto b = good;  // the first storage claims 7 elements: its entry holds 6 x 4 bytes
    const size_t p = find(b, "FloatStorage");
    ASSERT_NE(p, std::string::npos);
    const size_t k = find(b, std::string("X\x03\x00\x00\x00" "cpu", 8), p);
    ASSERT_NE(k, std::string::npos);
    ASSERT_EQ(b[k + 10], 'K');  // BINPUT n, BININT1 numel
    b[k + 11] = 7;
    expect_error(b, "expected 7 x 4", "storage size");
  }
  {
    auto b = good;  // a.weight (2 x 3) starts at storage offset 1: one element past its storage
    const size_t p = find(b, std::string("Q\x4b\x00", 3));  // BINPERSID, BININT1 0 (offset)
    ASSERT_NE(p, std::string::npos);
    b[p + 2] = 1;
    expect_error(b, "reaches element 6", "view beyond storage");
  }
  {
    std::vector<uint8_t> legacy{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46};  // torch < 1.6 magic number
    legacy.resize(64, 0);
    expect_error(legacy, "legacy", "legacy format");
  }
  for (size_t n : {size_t(0), size_t(10), size_t(100), good.size() / 2, good.size() - 1}) {
    std::vector<uint8_t> t(good.begin(), good.begin() + long(n));
    EXPECT_THROW(TorchCheckpoint::from_memory(t.data(), t.size(), "truncated.pth"), lq::Error) << n;
  }
}

TEST(TorchCheckpoint, RandomCorruptionIsCleanError) {
  const auto good = read_bytes(kSmall);
  std::mt19937 rng(5);
  int accepted = 0, refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto b = good;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = uint8_t(rng());
    try {
      const TorchCheckpoint c = TorchCheckpoint::from_memory(b.data(), b.size(), "fuzz.pth");
      for (const auto& n : c.names()) (void)c.read_f32(n);  // every accepted view stays inside its storage
      ++accepted;
    } catch (const lq::Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(accepted + refused, 3000);
  EXPECT_GT(refused, 0);
}

}  // namespace
