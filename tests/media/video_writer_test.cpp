// The MP4 writer, read back by FFmpeg through media::VideoReader: frame count, size, frame rate and the
// pixels within H.264's loss (PSNR > 30 dB on smooth moving gradients); no file at the target path
// until finish(), none left behind by an unfinished writer; bad sizes refused.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "io/error.h"
#include "media/video_reader.h"
#include "media/video_writer.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> frame(int w, int h, int k) {
  std::vector<uint8_t> f(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &f[(size_t(y) * w + x) * 3];
      p[0] = uint8_t((x * 4 + k * 8) & 255);
      p[1] = uint8_t(y * 3);
      p[2] = uint8_t(128 + 60 * std::sin(0.1 * (x + y) + 0.5 * k));
    }
  return f;
}

TEST(VideoWriter, RoundTripsThroughFfmpeg) {
  const std::string dir = lq::test::scratch_dir("video_writer");
  const std::string path = dir + "/clip.mp4";
  const int w = 64, h = 48, n = 9;
  {
    lq::media::VideoWriter vw(path, w, h);
    for (int k = 0; k < n; ++k) vw.add_frame(frame(w, h, k).data());
    EXPECT_FALSE(fs::exists(path));  // only after finish()
    vw.finish();
    EXPECT_EQ(vw.frames(), n);
  }
  ASSERT_TRUE(fs::exists(path));
  lq::media::VideoReader r(path);
  EXPECT_EQ(r.info().width, w);
  EXPECT_EQ(r.info().height, h);
  EXPECT_EQ(r.info().frame_count, n);
  EXPECT_NEAR(r.info().avg_fps, 12.0, 1e-6);
  std::vector<int64_t> idx;
  for (int k = 0; k < n; ++k) idx.push_back(k);
  const auto frames = r.frames_at(idx);
  ASSERT_EQ(int(frames.size()), n);
  for (int k = 0; k < n; ++k) {
    const auto ref = frame(w, h, k);
    double se = 0;
    for (size_t i = 0; i < ref.size(); ++i) se += std::pow(double(frames[size_t(k)].rgb[i]) - ref[i], 2);
    const double psnr = 10 * std::log10(255.0 * 255.0 / (se / double(ref.size())));
    EXPECT_GT(psnr, 30.0) << "frame " << k;
  }
  for (const auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "clip.mp4");  // no temporary left
}

TEST(VideoWriter, UnfinishedLeavesNothing) {
  const std::string dir = lq::test::scratch_dir("video_writer_unfinished");
  {
    lq::media::VideoWriter vw(dir + "/x.mp4", 32, 32);
    vw.add_frame(frame(32, 32, 0).data());
  }
  EXPECT_TRUE(fs::is_empty(dir));
  EXPECT_THROW(lq::media::VideoWriter(dir + "/odd.mp4", 33, 32), lq::Error);
}

}  // namespace
