#include "media/lance_transform.h"

#include <cmath>
#include <cstdlib>

#include "io/error.h"

namespace lq::media {

namespace {

// Python's round() on a float: nearest, halves to even (the default floating-point rounding mode).
int64_t py_round(double x) { return int64_t(std::nearbyint(x)); }

}  // namespace

FrameTransform vit_image_transform() {
  FrameTransform t;
  t.resolution = 672;
  return t;
}

FrameTransform vit_video_transform() {
  FrameTransform t;
  t.resolution = 616;
  return t;
}

std::vector<Bucket> lance_buckets(const FrameTransform& t) {
  if (t.resolution <= 0 || t.bucket_stride <= 0) fail("frame transform", "resolution and stride must be positive");
  const double max_area = double(t.resolution) * double(t.resolution);
  const double f = t.bucket_stride;
  std::vector<Bucket> out;
  for (const std::string& name : t.aspect_ratios) {
    int rw = 0, rh = 0;
    if (std::sscanf(name.c_str(), "%d:%d", &rw, &rh) != 2 || rw <= 0 || rh <= 0)
      fail("frame transform", "bad aspect ratio '" + name + "' (expected W:H)");
    const double aspect = double(rw) / double(rh);
    const double bw1 = double(py_round(std::sqrt(max_area * aspect) / f)) * f;
    const double bh1 = double(py_round(bw1 / aspect / f)) * f;
    const double bh2 = double(py_round(std::sqrt(max_area / aspect) / f)) * f;
    const double bw2 = double(py_round(bh2 * aspect / f)) * f;
    if (bh1 <= 0 || bh2 <= 0 || bw1 <= 0 || bw2 <= 0) fail("frame transform", "resolution too small for its stride");
    const double r1 = bw1 / bh1, r2 = bw2 / bh2;
    const double d1 = std::abs(r1 - aspect), d2 = std::abs(r2 - aspect);
    bool first;
    if (d1 < d2) first = true;
    else if (d1 > d2) first = false;
    else first = std::abs(bw1 * bh1 - max_area) <= std::abs(bw2 * bh2 - max_area);
    Bucket b;
    b.width = int(first ? bw1 : bw2);
    b.height = int(first ? bh1 : bh2);
    b.ratio = double(b.width) / double(b.height);
    out.push_back(b);
  }
  if (out.empty()) fail("frame transform", "no aspect ratios");
  return out;
}

Bucket nearest_bucket(const std::vector<Bucket>& buckets, int width, int height) {
  const double r = double(width) / double(height);
  size_t best = 0;
  for (size_t i = 1; i < buckets.size(); ++i)
    if (std::abs(r - buckets[i].ratio) < std::abs(r - buckets[best].ratio)) best = i;
  return buckets[best];
}

CropBox bucket_crop_box(int width, int height, double ratio) {
  const double area = double(width) * double(height);
  // torchvision draws log(ratio) in float32 and exponentiates in float32.
  const double ar = double(std::exp(std::log(float(ratio))));
  const int64_t w = py_round(std::sqrt(area * ar)), h = py_round(std::sqrt(area / ar));
  CropBox c;
  if (0 < w && w <= width && 0 < h && h <= height) {
    c.width = int(w);
    c.height = int(h);
  } else {
    const double in_ratio = double(width) / double(height);
    if (in_ratio < ratio) {
      c.width = width;
      c.height = int(py_round(width / ratio));
    } else if (in_ratio > ratio) {
      c.height = height;
      c.width = int(py_round(height * ratio));
    } else {
      c.width = width;
      c.height = height;
    }
  }
  c.top = (height - c.height) / 2;
  c.left = (width - c.width) / 2;
  return c;
}

RgbImage bucket_resize(const RgbImage& frame, const Bucket& bucket, ResampleFilter filter) {
  const CropBox c = bucket_crop_box(frame.width, frame.height, bucket.ratio);
  const RgbImage cropped = c.left == 0 && c.top == 0 && c.width == frame.width && c.height == frame.height
                               ? frame
                               : crop(frame, c.left, c.top, c.width, c.height);
  return resize_pil(cropped, bucket.width, bucket.height, filter);
}

FrameTensor transform_frames(const std::vector<RgbImage>& frames, const FrameTransform& t, const std::string& what) {
  if (frames.empty()) fail(what, "no frames");
  const int W0 = frames[0].width, H0 = frames[0].height;
  if (W0 <= 0 || H0 <= 0) fail(what, "empty frame");
  if (t.divisible <= 0) fail("frame transform", "divisible must be positive");
  const Bucket b = nearest_bucket(lance_buckets(t), W0, H0);
  FrameTensor out;
  out.t = int(frames.size());
  out.h = b.height - b.height % t.divisible;
  out.w = b.width - b.width % t.divisible;
  if (out.h <= 0 || out.w <= 0) fail(what, "bucket " + std::to_string(b.width) + "x" + std::to_string(b.height) +
                                               " is smaller than one " + std::to_string(t.divisible) + "-pixel unit");
  const int top = int(py_round((b.height - out.h) / 2.0)), left = int(py_round((b.width - out.w) / 2.0));
  const size_t plane = size_t(out.h) * size_t(out.w);
  out.data.resize(size_t(out.t) * 3 * plane);
  for (size_t f = 0; f < frames.size(); ++f) {
    if (frames[f].width != W0 || frames[f].height != H0)
      fail(what, "frame " + std::to_string(f) + " is " + std::to_string(frames[f].width) + "x" +
                     std::to_string(frames[f].height) + ", frame 0 is " + std::to_string(W0) + "x" + std::to_string(H0));
    const RgbImage r = bucket_resize(frames[f], b, t.filter);
    float* dst = out.data.data() + f * 3 * plane;
    for (int y = 0; y < out.h; ++y) {
      const uint8_t* row = r.row(top + y) + size_t(left) * 3;
      for (int x = 0; x < out.w; ++x)
        for (int c = 0; c < 3; ++c) {
          const float v = float(row[3 * x + c]) / 255.0f;
          dst[size_t(c) * plane + size_t(y) * size_t(out.w) + size_t(x)] = (v - t.mean[size_t(c)]) / t.std[size_t(c)];
        }
    }
  }
  return out;
}

}  // namespace lq::media
