// Minimal PNG output (libpng): 8-bit RGB, written to a temporary name and renamed into place.
#pragma once
#include <cstdint>
#include <string>

namespace lq::io {

// rgb: [height, width, 3] row-major bytes. Throws lq::Error naming `path` on failure.
void write_png_rgb(const std::string& path, const uint8_t* rgb, int width, int height);

}  // namespace lq::io
