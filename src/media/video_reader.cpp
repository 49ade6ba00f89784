#include "media/video_reader.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <mutex>

#include "io/error.h"

namespace lq::media {

namespace {

std::string av_error(int rc) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(rc, buf, sizeof buf);
  return buf;
}

void quiet_ffmpeg() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_level(AV_LOG_QUIET); });  // errors are reported by our messages
}

// One opened input with its video decoder.
struct Demux {
  AVFormatContext* fmt = nullptr;
  AVCodecContext* dec = nullptr;
  AVPacket* pkt = nullptr;
  AVFrame* frame = nullptr;
  SwsContext* sws = nullptr;
  int stream = -1;
  std::string path;

  explicit Demux(const std::string& p) : path(p) {
    quiet_ffmpeg();
    int rc = avformat_open_input(&fmt, p.c_str(), nullptr, nullptr);
    if (rc < 0) fail(p, "cannot open as video or image: " + av_error(rc));
    rc = avformat_find_stream_info(fmt, nullptr);
    if (rc < 0) fail(p, "cannot read stream information: " + av_error(rc));
    const AVCodec* codec = nullptr;
    stream = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (stream < 0 || !codec) fail(p, "has no decodable video stream");
    dec = avcodec_alloc_context3(codec);
    pkt = av_packet_alloc();
    frame = av_frame_alloc();
    if (!dec || !pkt || !frame) fail(p, "out of memory");
    rc = avcodec_parameters_to_context(dec, fmt->streams[stream]->codecpar);
    if (rc < 0) fail(p, "bad codec parameters: " + av_error(rc));
    dec->thread_count = 0;  // decoder's choice; output does not depend on it
    rc = avcodec_open2(dec, codec, nullptr);
    if (rc < 0) fail(p, std::string("cannot open the ") + codec->name + " decoder: " + av_error(rc));
  }
  ~Demux() {
    sws_freeContext(sws);
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
  }
  Demux(const Demux&) = delete;
  Demux& operator=(const Demux&) = delete;

  AVStream* st() const { return fmt->streams[stream]; }

  // Calls on_frame for every decoded frame in output order until it returns false or the input ends.
  void decode(const std::function<bool(const AVFrame*)>& on_frame) {
    bool flushing = false;
    while (true) {
      if (!flushing) {
        const int rc = av_read_frame(fmt, pkt);
        if (rc < 0) {
          flushing = true;
          avcodec_send_packet(dec, nullptr);
        } else {
          if (pkt->stream_index != stream) {
            av_packet_unref(pkt);
            continue;
          }
          avcodec_send_packet(dec, pkt);  // a damaged packet is skipped, as players do
          av_packet_unref(pkt);
        }
      }
      while (true) {
        const int rc = avcodec_receive_frame(dec, frame);
        if (rc == AVERROR(EAGAIN)) break;
        if (rc < 0) return;  // AVERROR_EOF after the flush, or a decoder failure
        const bool more = on_frame(frame);
        av_frame_unref(frame);
        if (!more) return;
      }
    }
  }

  int64_t count_packets() {
    int64_t n = 0;
    while (av_read_frame(fmt, pkt) >= 0) {
      n += pkt->stream_index == stream;
      av_packet_unref(pkt);
    }
    return n;
  }

  // The frame as RGB8 (alpha, when the format has one, composited over white if `composite`, else dropped).
  RgbImage to_rgb(const AVFrame* f, bool composite) {
    AVPixelFormat src = AVPixelFormat(f->format);
    bool full_range = f->color_range == AVCOL_RANGE_JPEG;
    switch (src) {  // the deprecated full-range aliases
      case AV_PIX_FMT_YUVJ420P: src = AV_PIX_FMT_YUV420P, full_range = true; break;
      case AV_PIX_FMT_YUVJ422P: src = AV_PIX_FMT_YUV422P, full_range = true; break;
      case AV_PIX_FMT_YUVJ444P: src = AV_PIX_FMT_YUV444P, full_range = true; break;
      case AV_PIX_FMT_YUVJ440P: src = AV_PIX_FMT_YUV440P, full_range = true; break;
      case AV_PIX_FMT_YUVJ411P: src = AV_PIX_FMT_YUV411P, full_range = true; break;
      default: break;
    }
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(src);
    if (!desc) fail(path, "decoded frame has an unknown pixel format");
    const bool alpha = composite && (desc->flags & AV_PIX_FMT_FLAG_ALPHA);
    const AVPixelFormat dst = alpha ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
    const int w = f->width, h = f->height;
    sws = sws_getCachedContext(sws, w, h, src, w, h, dst, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr,
                               nullptr, nullptr);
    if (!sws) fail(path, std::string("cannot convert pixel format ") + desc->name + " to RGB");
    int cs = SWS_CS_DEFAULT;
    switch (f->colorspace) {
      case AVCOL_SPC_BT709: cs = SWS_CS_ITU709; break;
      case AVCOL_SPC_FCC: cs = SWS_CS_FCC; break;
      case AVCOL_SPC_SMPTE240M: cs = SWS_CS_SMPTE240M; break;
      case AVCOL_SPC_BT2020_NCL:
      case AVCOL_SPC_BT2020_CL: cs = SWS_CS_BT2020; break;
      default: break;  // BT.601 (470BG, SMPTE 170M, unspecified)
    }
    if (!(desc->flags & AV_PIX_FMT_FLAG_RGB))
      sws_setColorspaceDetails(sws, sws_getCoefficients(cs), full_range ? 1 : 0, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0,
                               1 << 16, 1 << 16);
    const int ch = alpha ? 4 : 3;
    std::vector<uint8_t> buf(size_t(w) * size_t(h) * size_t(ch));
    uint8_t* dst_planes[4] = {buf.data(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {w * ch, 0, 0, 0};
    const int rows = sws_scale(sws, f->data, f->linesize, 0, h, dst_planes, dst_stride);
    if (rows != h) fail(path, "pixel format conversion failed");
    if (alpha) return rgba_over_white(buf.data(), w, h);
    RgbImage out;
    out.width = w;
    out.height = h;
    out.rgb = std::move(buf);
    return out;
  }
};

}  // namespace

VideoReader::VideoReader(const std::string& path) : path_(path) {
  Demux d(path);
  AVStream* st = d.st();
  info_.width = d.dec->width;
  info_.height = d.dec->height;
  info_.codec = d.dec->codec ? d.dec->codec->name : "";
  if (st->avg_frame_rate.num > 0 && st->avg_frame_rate.den > 0) info_.avg_fps = av_q2d(st->avg_frame_rate);
  if (d.fmt->duration > 0) info_.duration = double(d.fmt->duration) / AV_TIME_BASE;
  // The container's count (decord's len() for MP4 / MOV / MKV with counts); otherwise the packets, exact
  // where decord estimates rate x duration (one frame short for a NUT or raw stream).
  info_.frame_count = st->nb_frames > 0 ? st->nb_frames : d.count_packets();
  if (info_.frame_count < 1) fail(path, "video has no frames");
  if (info_.width <= 0 || info_.height <= 0) fail(path, "video has no frame size");
}

VideoReader::~VideoReader() = default;

std::vector<RgbImage> VideoReader::frames_at(const std::vector<int64_t>& indices) {
  for (size_t i = 0; i < indices.size(); ++i)
    if (indices[i] < 0 || (i > 0 && indices[i] < indices[i - 1]))
      fail(path_, "frame indices must be non-negative and non-decreasing");
  std::vector<RgbImage> out;
  if (indices.empty()) return out;
  Demux d(path_);
  out.reserve(indices.size());
  int64_t k = 0;
  RgbImage last;
  d.decode([&](const AVFrame* f) {
    if (out.size() < indices.size() && indices[out.size()] == k) {
      last = d.to_rgb(f, false);
      while (out.size() < indices.size() && indices[out.size()] == k) out.push_back(last);
    }
    ++k;
    return out.size() < indices.size();
  });
  if (out.empty()) {
    if (k == 0) fail(path_, "no frame could be decoded");
    // The first requested frame lies past the decodable ones: decode the last frame.
    Demux again(path_);
    int64_t j = 0;
    again.decode([&](const AVFrame* f) {
      if (++j == k) last = again.to_rgb(f, false);
      return j < k;
    });
    out.push_back(last);
  }
  while (out.size() < indices.size()) out.push_back(out.back());
  return out;
}

RgbImage read_first_frame(const std::string& path) {
  Demux d(path);
  RgbImage out;
  d.decode([&](const AVFrame* f) {
    out = d.to_rgb(f, true);
    return false;
  });
  if (out.empty()) fail(path, "no image could be decoded");
  return out;
}

int lance_fps(double avg_fps) {
  if (!(avg_fps > 0) || !std::isfinite(avg_fps)) return 24;
  return int(std::nearbyint(avg_fps));  // default rounding mode: halves to even, as Python's round
}

std::vector<int64_t> lance_frame_indices(int64_t total_frames, int fps, const FrameSampling& s) {
  if (total_frames < 1) fail("frame sampling", "clip has no frames");
  if (fps < 1) fail("frame sampling", "frame rate must be positive");
  if (s.sample_fps < 1 || s.temporal < 1 || !(s.max_duration > 0)) fail("frame sampling", "bad sampling settings");
  const double duration = std::min(double(total_frames) / double(fps), s.max_duration);
  int64_t n = int64_t(std::nearbyint(duration * s.sample_fps));
  const int64_t t = s.temporal;
  n = n % t != 0 ? n / t * t + 1 : n / t * t + 1 - t;  // n >= 0 here: C++ division floors like Python's
  if (n < 1)
    fail("frame sampling", "clip of " + std::to_string(total_frames) + " frames at " + std::to_string(fps) +
                               " fps is too short for one sampled frame");
  // split_n_frames_by_clip (one clip): temporal * (n / temporal) + 1 frames, i.e. n.
  std::vector<int64_t> idx(size_t(n), 0);
  if (n == 1) return idx;
  const double step = double(total_frames - 1) / double(n - 1);
  for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = int64_t(std::floor(double(i) * step));
  idx.back() = total_frames - 1;
  return idx;
}

SampledFrames read_clip(const std::string& path, const FrameSampling& s, double folder_fps) {
  namespace fs = std::filesystem;
  SampledFrames out;
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && has_image_extension(e.path().filename().string())) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail(path, "folder has no image files (png, jpg, jpeg, webp, bmp, gif, tif, tiff)");
    out.total_frames = int64_t(files.size());
    out.fps = lance_fps(folder_fps);
    out.indices = lance_frame_indices(out.total_frames, out.fps, s);
    for (size_t i = 0; i < out.indices.size(); ++i) {
      if (i > 0 && out.indices[i] == out.indices[i - 1]) {
        out.frames.push_back(out.frames.back());
        continue;
      }
      const std::string& f = files[size_t(out.indices[i])];
      out.frames.push_back(read_image(f));
      if (out.frames.back().width != out.frames.front().width || out.frames.back().height != out.frames.front().height)
        fail(f, "frame size differs from the folder's first sampled frame " + files[size_t(out.indices[0])]);
    }
    return out;
  }
  if (!fs::exists(path)) fail(path, "no such video file or folder");
  VideoReader r(path);
  out.total_frames = r.info().frame_count;
  out.fps = lance_fps(r.info().avg_fps);
  out.indices = lance_frame_indices(out.total_frames, out.fps, s);
  out.frames = r.frames_at(out.indices);
  return out;
}

}  // namespace lq::media
