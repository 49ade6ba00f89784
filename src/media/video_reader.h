// Video frames as 8-bit RGB (FFmpeg: libavformat / libavcodec / libswscale), and Lance's frame sampling.
//
// Lance reads videos with decord and samples them with MultiClipsFrameSampler (single clip, "kn+1"):
// fps = round(average frame rate) (24 when unknown), duration = frames / fps capped at max_duration,
// n = round(duration * sample_fps) forced to 4k+1 (n % 4 != 0: 4*floor(n/4) + 1, else n - 3), and the
// indices are numpy's linspace(0, frames - 1, n) floored: they span the WHOLE clip even when the count
// was capped (a 20 s clip gives 73 frames spread over 20 s). A folder of image files (sorted by name) is
// a clip too, at a frame rate the caller gives.
// Frame k is the k-th frame the decoder outputs (display order); the frame count is the container's
// (nb_frames, as decord), else the packets counted (decord estimates rate x duration there). Colour conversion:
// swscale, the frame's matrix and range (BT.601 when unspecified), accurate rounding, full chroma.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "media/image_io.h"

namespace lq::media {

struct VideoInfo {
  int width = 0, height = 0;
  int64_t frame_count = 0;  // as described above
  double avg_fps = 0;       // 0 when the container does not say
  double duration = 0;      // seconds, 0 when unknown
  std::string codec;
};

// An open video file. Throws lq::Error naming the file when it has no decodable video stream.
class VideoReader {
 public:
  explicit VideoReader(const std::string& path);
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  const VideoInfo& info() const { return info_; }
  // Frames at `indices` (non-decreasing; repeats allowed), decoded from the start in one pass. An index
  // past the last decodable frame (a container that overstates its count) gets the last frame.
  std::vector<RgbImage> frames_at(const std::vector<int64_t>& indices);

 private:
  std::string path_;
  VideoInfo info_;
};

// The first frame of any file FFmpeg decodes (still images in formats other than PNG/JPEG/WebP).
RgbImage read_first_frame(const std::string& path);

// ---- Lance's sampling ------------------------------------------------------------------------

struct FrameSampling {
  int sample_fps = 12;        // Lance: 12
  double max_duration = 6.0;  // seconds; Lance: 6
  int temporal = 4;           // frame count = temporal * k + 1
};

// Lance's integer frame rate of a clip: round(avg_fps) (halves to even, as Python), 24 when avg_fps <= 0.
int lance_fps(double avg_fps);
// Indices of the frames Lance samples from a clip of `total_frames` at integer rate `fps`. Throws
// lq::Error when the clip is too short to give one frame.
std::vector<int64_t> lance_frame_indices(int64_t total_frames, int fps, const FrameSampling& s = {});

struct SampledFrames {
  std::vector<RgbImage> frames;
  std::vector<int64_t> indices;  // into the clip
  int64_t total_frames = 0;
  int fps = 0;                   // the integer rate the sampling used
};

// Samples a video file, or a directory of image files (has_image_extension, sorted by name) played at
// `folder_fps` frames per second. All frames of a folder must have the same size.
SampledFrames read_clip(const std::string& path, const FrameSampling& s = {}, double folder_fps = 24.0);

}  // namespace lq::media
