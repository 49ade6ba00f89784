#include "io/png.h"

#include <png.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "io/error.h"
#include "io/signals.h"

namespace lq::io {

namespace {

// libpng reports errors through a callback; turn them into a C++ exception after cleanup.
[[noreturn]] void png_error_fn(png_structp, png_const_charp msg) { throw Error(std::string("libpng: ") + msg); }
void png_warning_fn(png_structp, png_const_charp) {}

}  // namespace

void write_png_rgb(const std::string& path, const uint8_t* rgb, int width, int height) {
  if (width <= 0 || height <= 0) fail(path, "PNG with an empty image");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  struct Slot {  // registered before it exists: the temporary file is removed on SIGINT / SIGTERM (io/signals.h)
    int id;
    ~Slot() { unregister_partial_output(id); }
  } slot{register_partial_output(tmp, false)};
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(path, "cannot create " + tmp);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  try {
    if (!png || !info) fail(path, "libpng initialisation failed");
    png_init_io(png, f);
    png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; ++y) png_write_row(png, const_cast<png_bytep>(rgb + size_t(y) * width * 3));
    png_write_end(png, nullptr);
  } catch (const Error& e) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    std::filesystem::remove(tmp);
    fail(path, e.what());
  }
  png_destroy_write_struct(&png, &info);
  if (std::fclose(f) != 0) {
    std::filesystem::remove(tmp);
    fail(path, "write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    fail(path, "rename failed: " + ec.message());
  }
}

}  // namespace lq::io
