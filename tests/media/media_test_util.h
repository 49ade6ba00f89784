// Test helpers that make media files with the encoders of the same libraries: PNG (libpng, any colour
// type), JPEG (libjpeg), WebP (libwebp) and video (libavformat/libavcodec: rawvideo RGB in NUT, lossless;
// MPEG-4 Part 2 with B-frames in MP4, lossy).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lq::media::test {

// PNG of `channels` samples per pixel (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), 8 bits.
void write_png(const std::string& path, const std::vector<uint8_t>& px, int w, int h, int channels);
// Palette PNG: indices [h, w], palette of RGB triples, optional alpha per palette entry (tRNS).
void write_png_palette(const std::string& path, const std::vector<uint8_t>& idx, int w, int h,
                       const std::vector<uint8_t>& palette_rgb, const std::vector<uint8_t>& trns);
void write_jpeg(const std::string& path, const std::vector<uint8_t>& px, int w, int h, int channels, int quality);
// Lossless WebP of RGB (channels 3) or RGBA (4).
void write_webp_lossless(const std::string& path, const std::vector<uint8_t>& px, int w, int h, int channels);

// frames: [n][h, w, 3]. codec "rawvideo" (NUT container, exact) or "mpeg4" (MP4, B-frames).
void write_video(const std::string& path, const std::vector<std::vector<uint8_t>>& frames, int w, int h, int fps,
                 const std::string& codec);

}  // namespace lq::media::test
