// LoadOptions::release_layer_pages (streaming forward): the outputs are bit-identical to a plain
// engine's, and the layers' mapped pages really leave this process's resident set (measured on the
// mapping itself in /proc/self/smaps, so other processes reading the same file cannot interfere).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "forward/forward.h"
#include "test_paths.h"

namespace lq::fwd {
namespace {

// Rss (bytes) of the mapping of this process that contains `addr`, from /proc/self/smaps; -1 if none.
int64_t mapping_rss(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> begin >> dash >> end && dash == '-') {  // a mapping's header line
      inside = begin <= a && a < end;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) return int64_t(std::stoll(line.substr(4))) * 1024;  // "Rss:  123 kB"
  }
  return -1;
}

const void* borrowed_weight(const Engine& e) {
  const auto* d = dynamic_cast<const DenseLinear*>(&e.linear({0, Path::Und, LinearKind::Gate}));
  return d ? d->matrix().data : nullptr;
}

Chunk text_sample(const Engine& e) {
  std::vector<int32_t> ids(24);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 37 + 5) % 200);
  const int64_t n = int64_t(ids.size());
  return text_chunk(e, ids, text_positions(n), {Split{n, SplitMode::Causal}});
}

TEST(ReleaseLayerPages, SameOutputsAndLayerPagesLeaveTheResidentSet) {
  LQ_REQUIRE_SHARED();
  LoadOptions plain_opts, stream_opts;  // f32 storage: lance-mini is F32, so the weights are borrowed
  stream_opts.release_layer_pages = true;
  const Engine plain = Engine::load(test::lance_mini_dir(), plain_opts);
  const Engine stream = Engine::load(test::lance_mini_dir(), stream_opts);
  const void* plain_w = borrowed_weight(plain);
  const void* stream_w = borrowed_weight(stream);
  ASSERT_NE(plain_w, nullptr);
  ASSERT_NE(stream_w, nullptr);
  ASSERT_NE(plain_w, stream_w);  // two separate maps of the same file

  const Chunk c = text_sample(plain);
  const std::vector<float> want = plain.forward(c, nullptr, CacheWrite::No);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass faults the released pages back in
    const std::vector<float> got = stream.forward(c, nullptr, CacheWrite::No);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), sizeof(float) * got.size()), 0) << "pass " << pass;
  }

  // Every und-path layer weight (text rows take the und path) was read by the plain forward and is
  // still mapped there; the streaming engine holds at most the non-layer tensors it touched plus
  // partial pages at tensor boundaries.
  int64_t layer_bytes = 0;
  for (int l = 0; l < plain.num_layers(); ++l)
    for (LinearKind k : model::kAllLinearKinds) layer_bytes += int64_t(plain.linear({l, Path::Und, k}).weight_bytes());
  const int64_t rss_plain = mapping_rss(plain_w), rss_stream = mapping_rss(stream_w);
  ASSERT_GE(rss_plain, 0);
  ASSERT_GE(rss_stream, 0);
  EXPECT_GE(rss_plain, layer_bytes) << "the plain forward should have touched every und layer weight";
  EXPECT_LE(rss_stream, rss_plain - layer_bytes * 9 / 10)
      << "plain " << rss_plain << " B, streaming " << rss_stream << " B, layer weights " << layer_bytes << " B";
}

}  // namespace
}  // namespace lq::fwd
