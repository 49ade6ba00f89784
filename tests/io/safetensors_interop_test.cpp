// Interop with the reference implementation (PyPI `safetensors`, Rust core). This test is driven by
// tests/io/safetensors_interop_test.py, which writes python.safetensors with safetensors.numpy,
// runs this test with LQ_INTEROP_DIR set, then loads ours.safetensors with safetensors.numpy.
// Run alone (no LQ_INTEROP_DIR) it skips.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace lq::test {
namespace {

using io::DType;

TEST(SafetensorsInterop, ReadsPythonFileAndWritesOneForPython) {
  const char* dir_env = std::getenv("LQ_INTEROP_DIR");
  if (!dir_env) GTEST_SKIP() << "driven by tests/io/safetensors_interop_test.py (LQ_INTEROP_DIR unset)";
  const std::string dir = dir_env;

  // What the Python side wrote (keep in step with the .py file).
  io::SafetensorsFile py(dir + "/python.safetensors");
  EXPECT_EQ(py.metadata().at("source"), "python");
  std::vector<float> f32(12);
  for (int i = 0; i < 12; ++i) f32[i] = i * 0.25f - 1.0f;
  EXPECT_EQ(py.info("f32").shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(py.read_f32("f32"), f32);
  EXPECT_EQ(py.info("f16").dtype, DType::F16);
  EXPECT_EQ(py.read_f32("f16"), (std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f}));
  const auto i32 = py.bytes(py.info("i32"));
  const std::vector<int32_t> want_i32{-5, 0, 7, 2147483647};
  ASSERT_EQ(i32.size(), 16u);
  EXPECT_EQ(std::vector<int32_t>(reinterpret_cast<const int32_t*>(i32.data()), reinterpret_cast<const int32_t*>(i32.data()) + 4), want_i32);
  const auto u8 = py.bytes(py.info("u8"));
  EXPECT_EQ(std::vector<uint8_t>(u8.begin(), u8.end()), (std::vector<uint8_t>{0, 40, 80, 120, 160, 200}));
  EXPECT_EQ(py.info("empty").shape, (std::vector<int64_t>{0, 3}));

  // What the Python side will check.
  io::SafetensorsWriter w(dir + "/ours.safetensors", {{"writer", "lance-quant"}});
  w.declare("a", DType::F32, {2, 3});
  w.declare("z", DType::F32, {0});
  w.declare("c", DType::F16, {3});
  w.declare("d", DType::I32, {2});
  w.declare("e", DType::U8, {4});
  const float a[6] = {0.0f, 1.5f, 3.0f, 4.5f, 6.0f, 7.5f};
  const uint16_t c[3] = {0x3C00, 0xC000, 0x3800};  // 1, -2, 0.5
  const int32_t d[2] = {-123456, 654321};
  const uint8_t e[4] = {9, 8, 7, 255};
  w.write(a, sizeof a);
  w.write(c, sizeof c);
  w.write(d, sizeof d);
  w.write(e, sizeof e);
  w.finish();
}

}  // namespace
}  // namespace lq::test
