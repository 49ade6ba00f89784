#include "media/image_io.h"

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "io/error.h"
#include "io/text_file.h"
#include "media/video_reader.h"

namespace lq::media {

namespace {

// PIL's DIV255: exact rounding of v / 255 for 0 <= v <= 255 * 255.
inline uint8_t div255(unsigned v) {
  const unsigned t = v + 128;
  return uint8_t(((t >> 8) + t) >> 8);
}

bool is_png(const uint8_t* d, size_t n) { return n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0; }
bool is_jpeg(const uint8_t* d, size_t n) { return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF; }
bool is_webp(const uint8_t* d, size_t n) {
  return n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0;
}

// ---- PNG ------------------------------------------------------------------------------------

struct MemReader {
  const uint8_t* data;
  size_t size, pos;
};

[[noreturn]] void png_error_fn(png_structp, png_const_charp msg) { throw Error(std::string("libpng: ") + msg); }
void png_warning_fn(png_structp, png_const_charp) {}

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<MemReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "truncated file");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

RgbImage decode_png(const uint8_t* data, size_t size, const std::string& name) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail(name, "libpng initialisation failed");
  }
  MemReader reader{data, size, 0};
  RgbImage out;
  try {
    png_set_read_fn(png, &reader, png_read_mem);
    png_set_user_limits(png, 1u << 16, 1u << 16);
    png_read_info(png, info);
    const int color = png_get_color_type(png, info);
    const int depth = png_get_bit_depth(png, info);
    // PIL's modes: grey "L" (sub-byte depths scaled to 0..255), "LA", "RGB", "RGBA", palette "P" (with
    // tRNS alpha per entry). Only P and RGBA reach Lance's white compositing; tRNS on grey / RGB is ignored.
    bool alpha = false;
    if (depth == 16) png_set_strip_16(png);  // high byte, as PIL's ";16B" raw modes
    if (color == PNG_COLOR_TYPE_PALETTE) {
      png_set_palette_to_rgb(png);
      if (png_get_valid(png, info, PNG_INFO_tRNS)) {
        png_set_tRNS_to_alpha(png);
        alpha = true;
      }
    } else if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) {
      if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
      if (color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_strip_alpha(png);  // "LA" -> "RGB" drops alpha
      png_set_gray_to_rgb(png);
    } else if (color == PNG_COLOR_TYPE_RGB_ALPHA) {
      alpha = true;
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int w = int(png_get_image_width(png, info)), h = int(png_get_image_height(png, info));
    const int channels = png_get_channels(png, info);
    if (channels != (alpha ? 4 : 3)) fail(name, "unexpected PNG channel layout");
    std::vector<uint8_t> buf(size_t(w) * size_t(h) * size_t(channels));
    std::vector<png_bytep> rows(static_cast<size_t>(h));
    for (int y = 0; y < h; ++y) rows[size_t(y)] = buf.data() + size_t(y) * size_t(w) * size_t(channels);
    png_read_image(png, rows.data());
    if (alpha) {
      out = rgba_over_white(buf.data(), w, h);
    } else {
      out.width = w;
      out.height = h;
      out.rgb = std::move(buf);
    }
  } catch (const Error& e) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail(name, e.what());
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

// ---- JPEG -----------------------------------------------------------------------------------

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}
void jpeg_quiet(j_common_ptr, int) {}

// Plain C-style decoding between setjmp and longjmp: no object with a destructor lives in this frame.
// Returns 0 on success, 1 on a libjpeg error (message in err), 2 for CMYK / unknown colour spaces.
int jpeg_decode_raw(const uint8_t* data, size_t size, JpegErr* err, uint8_t** pixels, int* w, int* h) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->mgr);
  err->mgr.error_exit = jpeg_error_exit;
  err->mgr.emit_message = jpeg_quiet;
  *pixels = nullptr;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    std::free(*pixels);
    *pixels = nullptr;
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return 2;
  }
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  // PIL's defaults: accurate integer IDCT (JDCT_ISLOW), fancy upsampling, no scaling.
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);
  *w = int(cinfo.output_width);
  *h = int(cinfo.output_height);
  const int comps = cinfo.output_components;
  *pixels = static_cast<uint8_t*>(std::malloc(size_t(*w) * size_t(*h) * 3));
  if (!*pixels) {
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* row = *pixels + size_t(cinfo.output_scanline) * size_t(*w) * 3;
    JSAMPROW rp = row;
    jpeg_read_scanlines(&cinfo, &rp, 1);
    if (comps == 1)  // grey in place, expanded from the back
      for (int x = *w - 1; x >= 0; --x) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = row[x];
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return 0;
}

RgbImage decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  JpegErr err{};
  uint8_t* pixels = nullptr;
  int w = 0, h = 0;
  const int rc = jpeg_decode_raw(data, size, &err, &pixels, &w, &h);
  if (rc == 1) fail(name, std::string("JPEG decoding failed: ") + err.message);
  if (rc == 2) fail(name, "CMYK / YCCK JPEGs are not supported (convert the image to RGB)");
  RgbImage out;
  out.width = w;
  out.height = h;
  out.rgb.assign(pixels, pixels + size_t(w) * size_t(h) * 3);
  std::free(pixels);
  return out;
}

// ---- WebP -----------------------------------------------------------------------------------

RgbImage decode_webp(const uint8_t* data, size_t size, const std::string& name) {
  WebPBitstreamFeatures f;
  if (WebPGetFeatures(data, size, &f) != VP8_STATUS_OK) fail(name, "not a decodable WebP file");
  if (f.has_animation) fail(name, "animated WebP is not supported as a still image");
  int w = 0, h = 0;
  RgbImage out;
  if (f.has_alpha) {
    uint8_t* p = WebPDecodeRGBA(data, size, &w, &h);
    if (!p) fail(name, "WebP decoding failed");
    out = rgba_over_white(p, w, h);
    WebPFree(p);
  } else {
    uint8_t* p = WebPDecodeRGB(data, size, &w, &h);
    if (!p) fail(name, "WebP decoding failed");
    out.width = w;
    out.height = h;
    out.rgb.assign(p, p + size_t(w) * size_t(h) * 3);
    WebPFree(p);
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

RgbImage rgba_over_white(const uint8_t* rgba, int width, int height) {
  RgbImage out;
  out.width = width;
  out.height = height;
  const size_t n = size_t(width) * size_t(height);
  out.rgb.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    const unsigned a = rgba[4 * i + 3];
    for (int c = 0; c < 3; ++c) out.rgb[3 * i + size_t(c)] = div255(255u * (255u - a) + unsigned(rgba[4 * i + size_t(c)]) * a);
  }
  return out;
}

RgbImage decode_image(const uint8_t* data, size_t size, const std::string& name) {
  if (is_png(data, size)) return decode_png(data, size, name);
  if (is_jpeg(data, size)) return decode_jpeg(data, size, name);
  if (is_webp(data, size)) return decode_webp(data, size, name);
  fail(name, "not a PNG, JPEG or WebP image");
}

RgbImage read_image(const std::string& path) {
  const std::string bytes = io::read_file(path, "image");
  const auto* d = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.empty()) fail(path, "empty file");
  if (is_png(d, bytes.size()) || is_jpeg(d, bytes.size()) || is_webp(d, bytes.size()))
    return decode_image(d, bytes.size(), path);
  return read_first_frame(path);  // BMP, TIFF, GIF, ... through FFmpeg
}

bool has_image_extension(const std::string& path) {
  const auto dot = path.find_last_of('.');
  if (dot == std::string::npos) return false;
  const std::string ext = lower(path.substr(dot + 1));
  for (const char* e : {"png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"})
    if (ext == e) return true;
  return false;
}

}  // namespace lq::media
