// Still images as 8-bit RGB, decoded the way Lance's reference pipeline (PIL) sees them.
//
// PNG (libpng), JPEG (libjpeg-turbo, default ISLOW IDCT and fancy upsampling: PIL's settings) and WebP
// (libwebp) are decoded by the libraries PIL itself uses, so the pixels match PIL's; any other format
// FFmpeg knows (BMP, TIFF, GIF, ...) is decoded by libavcodec (first frame). The colour rule is Lance's
// (`get_video_tensor_online`): palette and RGBA images are composited over white with PIL's rounding,
// round((rgb * a + 255 * (255 - a)) / 255); grey is replicated; grey+alpha drops its alpha (PIL's "LA"
// -> "RGB"); 16-bit samples keep their high byte; EXIF orientation is ignored (PIL does not apply it).
// Differences from PIL: 16-bit grey PNGs (PIL clips their values to 255) and CMYK JPEGs (refused).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lq::media {

// [height, width, 3] row-major bytes.
struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  bool empty() const { return width <= 0 || height <= 0; }
  uint8_t* row(int y) { return rgb.data() + size_t(y) * size_t(width) * 3; }
  const uint8_t* row(int y) const { return rgb.data() + size_t(y) * size_t(width) * 3; }
};

// Reads an image file (format from its content, not its name). Throws lq::Error naming `path` for
// unreadable, truncated or unsupported files.
RgbImage read_image(const std::string& path);
// The same from bytes in memory; `name` is used in messages.
RgbImage decode_image(const uint8_t* data, size_t size, const std::string& name);

// True when the name ends in an image extension read_image handles (png, jpg, jpeg, webp, bmp, gif,
// tif, tiff), case-insensitive: how a folder of frames is listed.
bool has_image_extension(const std::string& path);

// Composites straight-alpha RGBA [h, w, 4] over white with PIL's paste rounding.
RgbImage rgba_over_white(const uint8_t* rgba, int width, int height);

}  // namespace lq::media
