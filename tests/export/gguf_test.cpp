// GGUF writer: parse-back by our reader, and the raw header bytes against the v3 layout.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "export/gguf.h"
#include "io/error.h"
#include "test_paths.h"

using namespace lq::exporter;

namespace {

std::vector<uint8_t> file_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

template <class T>
T at(const std::vector<uint8_t>& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

}  // namespace

TEST(Gguf, WritesAndReadsBack) {
  const std::string dir = lq::test::scratch_dir("gguf_rw");
  const std::string path = dir + "/t.gguf";
  std::vector<float> a(3 * 64), b(256), c(5);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.01f - 0.9f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(i % 17) - 8.0f;
  for (size_t i = 0; i < c.size(); ++i) c[i] = float(i) + 0.5f;
  {
    GgufWriter w(path);
    w.set("general.architecture", std::string("qwen3"));
    w.set("qwen3.block_count", uint32_t(4));
    w.set("qwen3.rope.freq_base", 1e6f);
    w.set("tokenizer.ggml.add_bos_token", false);
    w.set("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b", "<|x|>"});
    w.set("tokenizer.ggml.token_type", std::vector<int32_t>{1, 1, 3});
    w.declare("a", {3, 64}, GgmlType::Q8_0);
    w.declare("b", {1, 256}, GgmlType::Q4_K);
    w.declare("c", {5}, GgmlType::F32);
    w.write_tensor("a", a.data());
    EXPECT_THROW(w.write_tensor("c", c.data()), lq::Error);  // out of order
    w.write_tensor("b", b.data());
    w.write_tensor("c", c.data());
    w.finish();
  }
  const GgufFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(std::get<std::string>(f.metadata().at("general.architecture")), "qwen3");
  EXPECT_EQ(std::get<uint32_t>(f.metadata().at("qwen3.block_count")), 4u);
  EXPECT_EQ(std::get<float>(f.metadata().at("qwen3.rope.freq_base")), 1e6f);
  EXPECT_EQ(std::get<bool>(f.metadata().at("tokenizer.ggml.add_bos_token")), false);
  EXPECT_EQ(std::get<std::vector<std::string>>(f.metadata().at("tokenizer.ggml.tokens"))[2], "<|x|>");
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensor("a").shape, (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(f.tensor("a").nbytes, 3u * 2 * 34);
  for (const auto& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  EXPECT_EQ(f.read_f32("c"), c);
  const auto b2 = f.read_f32("b");
  for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(b2[i], b[i], 1.2) << i;

  // Raw layout: magic, version, counts, first key; dims stored innermost first.
  const auto bytes = file_bytes(path);
  EXPECT_EQ(std::memcmp(bytes.data(), "GGUF", 4), 0);
  EXPECT_EQ(at<uint32_t>(bytes, 4), 3u);
  EXPECT_EQ(at<uint64_t>(bytes, 8), 3u);  // tensors
  EXPECT_EQ(at<uint64_t>(bytes, 16), 6u); // metadata
  EXPECT_EQ(at<uint64_t>(bytes, 24), std::string("general.architecture").size());
  EXPECT_EQ(bytes.size() % 32, 0u);
}

TEST(Gguf, RejectsBadInput) {
  const std::string dir = lq::test::scratch_dir("gguf_bad");
  {
    GgufWriter w(dir + "/x.gguf");
    EXPECT_THROW(w.declare("q", {2, 100}, GgmlType::Q4_0), lq::Error);  // 100 % 32 != 0
    w.set("k", uint32_t(1));
    EXPECT_THROW(w.set("k", uint32_t(2)), lq::Error);
    // Destroyed unfinished: no file appears.
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.gguf"));
  std::ofstream(dir + "/junk.gguf") << "GGUF\x02";
  EXPECT_THROW(GgufFile(dir + "/junk.gguf"), lq::Error);
}
