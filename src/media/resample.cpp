#include "media/resample.h"

#include <cmath>
#include <cstring>

#include "io/error.h"

namespace lq::media {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // libImaging's PRECISION_BITS for 8-bit images

double bilinear(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}
double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}
double lanczos(double x) { return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0; }

struct Filter {
  double (*fn)(double);
  double support;
};
Filter filter_of(ResampleFilter f) {
  switch (f) {
    case ResampleFilter::Bilinear: return {bilinear, 1.0};
    case ResampleFilter::Bicubic: return {bicubic, 2.0};
    case ResampleFilter::Lanczos: return {lanczos, 3.0};
  }
  return {bicubic, 2.0};
}

// precompute_coeffs + normalize_coeffs_8bpc: per output pixel its first input index, tap count and
// ksize fixed-point coefficients.
struct Coeffs {
  int ksize = 0;
  std::vector<int> xmin, count;
  std::vector<int32_t> k;  // [out, ksize]
};

Coeffs precompute(int in_size, int out_size, const Filter& f) {
  const double in0 = 0.0, in1 = in_size;
  double filterscale, scale;
  filterscale = scale = (in1 - in0) / out_size;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = f.support * filterscale;
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.xmin.resize(size_t(out_size));
  c.count.resize(size_t(out_size));
  c.k.assign(size_t(out_size) * size_t(c.ksize), 0);
  std::vector<double> kd(size_t(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double w = f.fn((x + xmin - center + 0.5) * ss);
      kd[size_t(x)] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) kd[size_t(x)] /= ww;
    for (int x = 0; x < xmax; ++x) {
      const double v = kd[size_t(x)] * (1 << kPrecisionBits);
      c.k[size_t(xx) * size_t(c.ksize) + size_t(x)] = v < 0 ? int32_t(-0.5 + v) : int32_t(0.5 + v);
    }
    c.xmin[size_t(xx)] = xmin;
    c.count[size_t(xx)] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t in) {
  if (in >= (1 << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return uint8_t(in >> kPrecisionBits);
}

}  // namespace

RgbImage crop(const RgbImage& in, int left, int top, int width, int height) {
  if (left < 0 || top < 0 || width <= 0 || height <= 0 || left + width > in.width || top + height > in.height)
    fail("crop", "box " + std::to_string(left) + "," + std::to_string(top) + " " + std::to_string(width) + "x" +
                     std::to_string(height) + " outside the " + std::to_string(in.width) + "x" + std::to_string(in.height) +
                     " image");
  RgbImage out;
  out.width = width;
  out.height = height;
  out.rgb.resize(size_t(width) * size_t(height) * 3);
  for (int y = 0; y < height; ++y) std::memcpy(out.row(y), in.row(top + y) + size_t(left) * 3, size_t(width) * 3);
  return out;
}

RgbImage resize_pil(const RgbImage& in, int out_w, int out_h, ResampleFilter filter) {
  if (in.empty() || out_w <= 0 || out_h <= 0) fail("resize", "empty image or target size");
  if (out_w == in.width && out_h == in.height) return in;
  const Filter f = filter_of(filter);
  const bool need_h = out_w != in.width, need_v = out_h != in.height;
  const Coeffs ch = precompute(in.width, out_w, f);
  const Coeffs cv = precompute(in.height, out_h, f);
  // Rows of the input the vertical pass reads.
  const int y_first = cv.xmin[0];
  const int y_last = cv.xmin[size_t(out_h) - 1] + cv.count[size_t(out_h) - 1];

  RgbImage tmp;
  const RgbImage* src = &in;
  int row_offset = 0;  // input row of src row 0
  if (need_h) {
    tmp.width = out_w;
    tmp.height = y_last - y_first;
    tmp.rgb.resize(size_t(tmp.width) * size_t(tmp.height) * 3);
    for (int yy = 0; yy < tmp.height; ++yy) {
      const uint8_t* row = in.row(yy + y_first);
      uint8_t* o = tmp.row(yy);
      for (int xx = 0; xx < out_w; ++xx) {
        const int xmin = ch.xmin[size_t(xx)], n = ch.count[size_t(xx)];
        const int32_t* k = &ch.k[size_t(xx) * size_t(ch.ksize)];
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < n; ++x) {
          const uint8_t* p = row + size_t(x + xmin) * 3;
          s0 += int32_t(p[0]) * k[x];
          s1 += int32_t(p[1]) * k[x];
          s2 += int32_t(p[2]) * k[x];
        }
        o[3 * xx] = clip8(s0);
        o[3 * xx + 1] = clip8(s1);
        o[3 * xx + 2] = clip8(s2);
      }
    }
    src = &tmp;
    row_offset = y_first;
  }
  if (!need_v) return need_h ? tmp : in;
  RgbImage out;
  out.width = src->width;
  out.height = out_h;
  out.rgb.resize(size_t(out.width) * size_t(out_h) * 3);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = cv.xmin[size_t(yy)] - row_offset, n = cv.count[size_t(yy)];
    const int32_t* k = &cv.k[size_t(yy) * size_t(cv.ksize)];
    uint8_t* o = out.row(yy);
    for (int xx = 0; xx < out.width; ++xx) {
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int y = 0; y < n; ++y) {
        const uint8_t* p = src->row(ymin + y) + size_t(xx) * 3;
        s0 += int32_t(p[0]) * k[y];
        s1 += int32_t(p[1]) * k[y];
        s2 += int32_t(p[2]) * k[y];
      }
      o[3 * xx] = clip8(s0);
      o[3 * xx + 1] = clip8(s1);
      o[3 * xx + 2] = clip8(s2);
    }
  }
  return out;
}

}  // namespace lq::media
