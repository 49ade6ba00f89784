// Image and video reading, Lance's frame sampling, the PIL resampler and Lance's frame transform
// against hand-computed cases. (Parity with PIL on real photographs: tests/media/preprocess_parity_test.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/png.h"
#include "media/image_io.h"
#include "media/lance_transform.h"
#include "media/resample.h"
#include "media/video_reader.h"
#include "media_test_util.h"
#include "test_paths.h"

namespace lq::media {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> pattern(int w, int h, int ch, int seed) {
  std::vector<uint8_t> v(size_t(w) * size_t(h) * size_t(ch));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < ch; ++c) v[(size_t(y) * size_t(w) + size_t(x)) * size_t(ch) + size_t(c)] = uint8_t((x * 7 + y * 13 + c * 50 + seed * 31) & 255);
  return v;
}

// PIL's paste: round((fg * a + 255 * (255 - a)) / 255), computed here in double.
uint8_t over_white(int fg, int a) { return uint8_t(std::floor((fg * a + 255.0 * (255 - a)) / 255.0 + 0.5)); }

TEST(ImageIo, PngRgbRoundTrip) {
  const std::string d = lq::test::scratch_dir("media_png");
  const auto px = pattern(37, 23, 3, 1);
  io::write_png_rgb(d + "/a.png", px.data(), 37, 23);
  const RgbImage im = read_image(d + "/a.png");
  EXPECT_EQ(im.width, 37);
  EXPECT_EQ(im.height, 23);
  EXPECT_EQ(im.rgb, px);
}

TEST(ImageIo, PngAlphaGreyAndPaletteFollowPilModes) {
  const std::string d = lq::test::scratch_dir("media_png_modes");
  // RGBA: composited over white.
  const std::vector<uint8_t> rgba = {0, 100, 255, 128, 10, 20, 30, 0, 200, 150, 100, 255, 1, 2, 3, 77};
  test::write_png(d + "/rgba.png", rgba, 2, 2, 4);
  RgbImage im = read_image(d + "/rgba.png");
  ASSERT_EQ(im.rgb.size(), 12u);
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(im.rgb[size_t(3 * i + c)], over_white(rgba[size_t(4 * i + c)], rgba[size_t(4 * i + 3)])) << i << c;
  // Grey: replicated. Grey+alpha: alpha dropped (PIL "LA" -> "RGB"), not composited.
  test::write_png(d + "/l.png", {0, 90, 180, 255}, 2, 2, 1);
  im = read_image(d + "/l.png");
  EXPECT_EQ(im.rgb, (std::vector<uint8_t>{0, 0, 0, 90, 90, 90, 180, 180, 180, 255, 255, 255}));
  test::write_png(d + "/la.png", {40, 0, 90, 128}, 2, 1, 2);
  im = read_image(d + "/la.png");
  EXPECT_EQ(im.rgb, (std::vector<uint8_t>{40, 40, 40, 90, 90, 90}));
  // Palette with tRNS: P -> RGBA -> composited.
  test::write_png_palette(d + "/p.png", {0, 1, 2, 1}, 2, 2, {255, 0, 0, 0, 0, 255, 10, 200, 30}, {255, 64});
  im = read_image(d + "/p.png");
  const std::vector<uint8_t> want = {255, 0, 0, over_white(0, 64), over_white(0, 64), over_white(255, 64),
                                     10,  200, 30, over_white(0, 64), over_white(0, 64), over_white(255, 64)};
  EXPECT_EQ(im.rgb, want);
}

TEST(ImageIo, JpegAndWebp) {
  const std::string d = lq::test::scratch_dir("media_jpeg");
  std::vector<uint8_t> smooth(64 * 48 * 3);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x)
      for (int c = 0; c < 3; ++c) smooth[size_t((y * 64 + x) * 3 + c)] = uint8_t(40 + x * 2 + y + c * 20);
  test::write_jpeg(d + "/a.jpg", smooth, 64, 48, 3, 95);
  RgbImage im = read_image(d + "/a.jpg");
  ASSERT_EQ(im.width, 64);
  ASSERT_EQ(im.height, 48);
  int worst = 0;
  for (size_t i = 0; i < smooth.size(); ++i) worst = std::max(worst, std::abs(int(im.rgb[i]) - int(smooth[i])));
  EXPECT_LE(worst, 6);  // lossy, smooth content
  // Grey JPEG: one channel, replicated.
  std::vector<uint8_t> grey(32 * 32);
  for (size_t i = 0; i < grey.size(); ++i) grey[i] = uint8_t(60 + (i % 32) * 3);
  test::write_jpeg(d + "/g.jpg", grey, 32, 32, 1, 95);
  im = read_image(d + "/g.jpg");
  for (size_t i = 0; i < grey.size(); ++i) {
    EXPECT_EQ(im.rgb[3 * i], im.rgb[3 * i + 1]);
    EXPECT_EQ(im.rgb[3 * i], im.rgb[3 * i + 2]);
  }
  // Lossless WebP, RGB exact and RGBA composited.
  const auto px = pattern(19, 11, 3, 2);
  test::write_webp_lossless(d + "/a.webp", px, 19, 11, 3);
  EXPECT_EQ(read_image(d + "/a.webp").rgb, px);
  auto pa = pattern(5, 3, 4, 3);
  test::write_webp_lossless(d + "/b.webp", pa, 5, 3, 4);
  im = read_image(d + "/b.webp");
  for (int i = 0; i < 15; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(im.rgb[size_t(3 * i + c)], over_white(pa[size_t(4 * i + c)], pa[size_t(4 * i + 3)]));
}

TEST(ImageIo, BadFilesNameThemselves) {
  const std::string d = lq::test::scratch_dir("media_bad");
  std::ofstream(d + "/x.png") << "\x89PNG\r\n\x1a\n garbage";
  try {
    read_image(d + "/x.png");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.png"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_image(d + "/missing.png"), Error);
  std::ofstream(d + "/t.txt") << "hello, not an image";
  EXPECT_THROW(read_image(d + "/t.txt"), Error);
}

TEST(FrameSampling, LanceRuleHandComputed) {
  // 100 frames at 25 fps: 4 s -> round(48) = 48 = 4k -> 45 frames, linspace(0, 99, 45) floored (step 2.25).
  auto idx = lance_frame_indices(100, 25);
  ASSERT_EQ(idx.size(), 45u);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 2);
  EXPECT_EQ(idx[2], 4);
  EXPECT_EQ(idx[3], 6);
  EXPECT_EQ(idx[4], 9);
  EXPECT_EQ(idx[43], 96);  // floor(43 * 2.25) = 96
  EXPECT_EQ(idx[44], 99);
  // 20 s at 10 fps: capped to 6 s -> 72 -> 69 frames spread over all 200 frames.
  idx = lance_frame_indices(200, 10);
  ASSERT_EQ(idx.size(), 69u);
  EXPECT_EQ(idx.back(), 199);
  EXPECT_EQ(idx[34], 99);  // floor(34 * 199 / 68) = floor(99.5)
  // 3 s at 30 fps: 36 -> 33. 50 frames at 24 fps: round(25.0) = 25 -> 4*6 + 1 = 25.
  EXPECT_EQ(lance_frame_indices(90, 30).size(), 33u);
  EXPECT_EQ(lance_frame_indices(50, 24).size(), 25u);
  // Short clips: round(1.5) = 2 (halves to even) -> 1 frame; round(0.5) = 0 -> too short.
  EXPECT_EQ(lance_frame_indices(3, 24), (std::vector<int64_t>{0}));
  EXPECT_THROW(lance_frame_indices(1, 24), Error);
  EXPECT_EQ(lance_fps(29.97), 30);
  EXPECT_EQ(lance_fps(12.5), 12);
  EXPECT_EQ(lance_fps(0), 24);
}

std::vector<std::vector<uint8_t>> numbered_frames(int n, int w, int h) {
  std::vector<std::vector<uint8_t>> f;
  for (int k = 0; k < n; ++k) f.push_back(pattern(w, h, 3, k));
  return f;
}

TEST(VideoReader, LosslessClipGivesExactFramesAtLanceIndices) {
  const std::string d = lq::test::scratch_dir("media_video");
  const auto frames = numbered_frames(60, 32, 24);
  test::write_video(d + "/clip.nut", frames, 32, 24, 20, "rawvideo");
  VideoReader r(d + "/clip.nut");
  EXPECT_EQ(r.info().width, 32);
  EXPECT_EQ(r.info().height, 24);
  EXPECT_EQ(r.info().frame_count, 60);
  EXPECT_NEAR(r.info().avg_fps, 20.0, 1e-9);
  const std::vector<int64_t> want = {0, 3, 3, 17, 59};
  const auto got = r.frames_at(want);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i].rgb, frames[size_t(want[i])]) << "index " << want[i];
  // read_clip: 3 s at 20 fps -> 36 -> 33 frames, linspace(0, 59, 33) (step 1.84375).
  const SampledFrames s = read_clip(d + "/clip.nut");
  EXPECT_EQ(s.fps, 20);
  ASSERT_EQ(s.frames.size(), 33u);
  EXPECT_EQ(s.indices, lance_frame_indices(60, 20));
  EXPECT_EQ(s.indices[5], 9);  // floor(5 * 1.84375)
  for (size_t i = 0; i < s.frames.size(); ++i) EXPECT_EQ(s.frames[i].rgb, frames[size_t(s.indices[i])]);
}

TEST(VideoReader, Mpeg4WithBFramesComesOutInDisplayOrder) {
  const std::string d = lq::test::scratch_dir("media_video_mp4");
  // A bright bar moving right by 4 pixels per frame: a wrong order is obvious.
  const int w = 64, h = 32, n = 24;
  std::vector<std::vector<uint8_t>> frames;
  for (int k = 0; k < n; ++k) {
    std::vector<uint8_t> f(size_t(w * h * 3), 30);
    for (int y = 0; y < h; ++y)
      for (int x = k * 2; x < k * 2 + 8 && x < w; ++x)
        for (int c = 0; c < 3; ++c) f[size_t((y * w + x) * 3 + c)] = 230;
    frames.push_back(f);
  }
  test::write_video(d + "/bar.mp4", frames, w, h, 12, "mpeg4");
  VideoReader r(d + "/bar.mp4");
  EXPECT_EQ(r.info().frame_count, n);
  EXPECT_EQ(lance_fps(r.info().avg_fps), 12);
  std::vector<int64_t> all(n);
  for (int k = 0; k < n; ++k) all[size_t(k)] = k;
  const auto got = r.frames_at(all);
  ASSERT_EQ(got.size(), size_t(n));
  for (int k = 0; k < n; ++k) {
    // The decoded frame is closest to its own source frame.
    int best = -1;
    double best_err = 1e30;
    for (int j = 0; j < n; ++j) {
      double e = 0;
      for (size_t i = 0; i < frames[size_t(j)].size(); ++i) e += std::abs(int(got[size_t(k)].rgb[i]) - int(frames[size_t(j)][i]));
      if (e < best_err) best_err = e, best = j;
    }
    EXPECT_EQ(best, k);
  }
}

TEST(VideoReader, FolderOfImagesIsAClip) {
  const std::string d = lq::test::scratch_dir("media_folder");
  const auto frames = numbered_frames(30, 8, 6);
  for (int k = 0; k < 30; ++k) {
    char name[32];
    std::snprintf(name, sizeof name, "/f%03d.png", k);
    io::write_png_rgb(d + name, frames[size_t(k)].data(), 8, 6);
  }
  std::ofstream(d + "/notes.txt") << "not a frame";
  const SampledFrames s = read_clip(d, {}, 10.0);  // 3 s at 10 fps -> 36 -> 33 frames
  EXPECT_EQ(s.total_frames, 30);
  EXPECT_EQ(s.indices, lance_frame_indices(30, 10));
  ASSERT_EQ(s.frames.size(), 33u);
  for (size_t i = 0; i < s.frames.size(); ++i) EXPECT_EQ(s.frames[i].rgb, frames[size_t(s.indices[i])]);
  EXPECT_THROW(read_clip(d + "/nothing_here"), Error);
}

TEST(Resample, HandComputedAndInvariants) {
  // 4x1 -> 2x1 bilinear: taps of output 0 at (0.5 + x - 1) / 2 -> 0.75, 0.75, 0.25 (normalised by 1.75).
  RgbImage in;
  in.width = 4;
  in.height = 1;
  in.rgb = {0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255};
  const RgbImage out = resize_pil(in, 2, 1, ResampleFilter::Bilinear);
  EXPECT_EQ(out.rgb[0], uint8_t(std::lround((0 * 0.75 + 100 * 0.75 + 200 * 0.25) / 1.75)));
  // A constant image stays constant under every filter, up and down.
  RgbImage c;
  c.width = 33;
  c.height = 17;
  c.rgb.assign(33 * 17 * 3, 77);
  for (auto f : {ResampleFilter::Bilinear, ResampleFilter::Bicubic, ResampleFilter::Lanczos})
    for (auto [w, h] : {std::pair{10, 9}, std::pair{70, 40}, std::pair{33, 5}}) {
      const RgbImage r = resize_pil(c, w, h, f);
      ASSERT_EQ(r.width, w);
      ASSERT_EQ(r.height, h);
      for (uint8_t v : r.rgb) ASSERT_EQ(v, 77);
    }
  const RgbImage k = crop(c, 3, 2, 10, 5);
  EXPECT_EQ(k.width, 10);
  EXPECT_THROW(crop(c, 30, 0, 10, 5), Error);
}

TEST(LanceTransform, BucketsHandComputed) {
  // 672: 16:9 -> sqrt(672^2 * 16/9) = 896, 896 / (16/9) = 504 -> 31.5 rounds to 32 -> 512 (ratio 1.75); the
  // other candidate 504 -> 512, 512 * 16/9 = 910.2 -> 912 (ratio 1.78125) is nearer 16/9.
  const auto b = lance_buckets(vit_image_transform());
  ASSERT_EQ(b.size(), 6u);
  EXPECT_EQ(b[0].width, 1008);  // 21:9: 1008 x 432 (ratio exactly 7/3)
  EXPECT_EQ(b[0].height, 432);
  EXPECT_EQ(b[1].width, 912);
  EXPECT_EQ(b[1].height, 512);
  EXPECT_EQ(b[2].width, 768);
  EXPECT_EQ(b[2].height, 576);
  EXPECT_EQ(b[3].width, 672);
  EXPECT_EQ(b[3].height, 672);
  EXPECT_EQ(b[4].width, 576);
  EXPECT_EQ(b[4].height, 768);
  EXPECT_EQ(b[5].width, 512);
  EXPECT_EQ(b[5].height, 912);
  // 1000x500 (ratio 2): nearest is 16:9 (1.78125); the full-area crop 944x530 does not fit, so the
  // centred crop of ratio 1.78125 at full height: round(500 * 1.78125) = round(890.625) = 891 wide.
  EXPECT_EQ(nearest_bucket(b, 1000, 500).width, 912);
  const CropBox cb = bucket_crop_box(1000, 500, 912.0 / 512.0);
  EXPECT_EQ(cb.width, 891);
  EXPECT_EQ(cb.height, 500);
  EXPECT_EQ(cb.left, 54);
  EXPECT_EQ(cb.top, 0);
  // A frame of exactly the bucket's ratio is used whole.
  const CropBox whole = bucket_crop_box(1024, 768, 768.0 / 576.0);
  EXPECT_EQ(whole.width, 1024);
  EXPECT_EQ(whole.height, 768);
}

TEST(LanceTransform, ShapesNormalisationAndDivisibleCrop) {
  // 672x672 grey 128: one 1:1 bucket, no crop; value (128/255 - mean) / std per channel.
  RgbImage g;
  g.width = 300;
  g.height = 300;
  g.rgb.assign(300 * 300 * 3, 128);
  const FrameTransform t = vit_image_transform();
  const FrameTensor x = transform_frames({g, g}, t, "grey");
  EXPECT_EQ(x.t, 2);
  EXPECT_EQ(x.h, 672);
  EXPECT_EQ(x.w, 672);
  const size_t plane = 672u * 672u;
  for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(x.data[size_t(c) * plane + 12345], (128.0f / 255.0f - t.mean[size_t(c)]) / t.std[size_t(c)]);
  // 16:9 photo -> bucket 912x512 -> cropped to 896x504 (multiples of 28): 18 x 32 merged units = 576 tokens.
  RgbImage wide;
  wide.width = 1600;
  wide.height = 900;
  wide.rgb.assign(size_t(1600) * 900 * 3, 10);
  const FrameTensor y = transform_frames({wide}, t, "wide");
  EXPECT_EQ(y.w, 896);
  EXPECT_EQ(y.h, 504);
  RgbImage other = wide;
  other.width = 1599;
  EXPECT_THROW(transform_frames({wide, other}, t, "mixed"), Error);
}

}  // namespace
}  // namespace lq::media
