// MP4 output through FFmpeg's libraries (libavformat / libavcodec / libswscale): 8-bit RGB frames in,
// H.264 (libx264, CRF 17, yuv420p, one encoder thread so the file is deterministic) in an MP4
// container; MPEG-4 Part 2 when the libavcodec build has no H.264 encoder. Lance saves its videos at
// 12 frames per second (imageio / FFmpeg, libx264, yuv420p), the default here.
// The file is written to a temporary name beside `path` and renamed by finish(); a writer destroyed
// unfinished (an exception) removes its temporary file, so no partial video is ever left at `path`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace lq::media {

struct VideoWriterOptions {
  int fps = 12;
  int crf = 17;  // H.264 quality (lower is better; 17 is visually lossless)
};

class VideoWriter {
 public:
  // width and height must be even (yuv420p); throws lq::Error naming `path` otherwise or when no
  // encoder is available.
  VideoWriter(const std::string& path, int width, int height, const VideoWriterOptions& options = {});
  ~VideoWriter();
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;

  void add_frame(const uint8_t* rgb);  // [height, width, 3]
  void finish();                       // flushes the encoder, writes the trailer, renames into place
  int64_t frames() const;
  const std::string& codec() const;    // "libx264" or the fallback's name

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lq::media
