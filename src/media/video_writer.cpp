#include "media/video_writer.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "io/error.h"
#include "io/signals.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

namespace lq::media {

namespace {

std::string av_error(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

}  // namespace

struct VideoWriter::Impl {
  std::string path, tmp;
  int width = 0, height = 0;
  VideoWriterOptions opt;
  AVFormatContext* fmt = nullptr;
  AVCodecContext* enc = nullptr;
  AVStream* stream = nullptr;
  AVFrame* frame = nullptr;
  AVPacket* pkt = nullptr;
  SwsContext* sws = nullptr;
  int64_t count = 0;
  bool finished = false, header = false;
  std::string codec_name;
  int signal_slot = -1;  // the temporary file, removed on SIGINT / SIGTERM (io/signals.h)

  void check(int r, const std::string& what) const {
    if (r < 0) fail(path, what + ": " + av_error(r));
  }

  // Sends `f` (null: flush) and writes every packet the encoder returns.
  void drain(AVFrame* f) {
    check(avcodec_send_frame(enc, f), "encoding");
    while (true) {
      const int r = avcodec_receive_packet(enc, pkt);
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) break;
      check(r, "encoding");
      if (pkt->duration == 0) pkt->duration = 1;  // one frame (in encoder ticks): the MP4 keeps the last frame's length
      av_packet_rescale_ts(pkt, enc->time_base, stream->time_base);
      pkt->stream_index = stream->index;
      check(av_interleaved_write_frame(fmt, pkt), "writing");
    }
  }

  ~Impl() {
    if (sws) sws_freeContext(sws);
    if (frame) av_frame_free(&frame);
    if (pkt) av_packet_free(&pkt);
    if (enc) avcodec_free_context(&enc);
    if (fmt) {
      if (fmt->pb) avio_closep(&fmt->pb);
      avformat_free_context(fmt);
    }
    if (!finished && !tmp.empty()) std::remove(tmp.c_str());
    io::unregister_partial_output(signal_slot);
  }
};

VideoWriter::VideoWriter(const std::string& path, int width, int height, const VideoWriterOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.width = width;
  m.height = height;
  m.opt = options;
  if (width <= 0 || height <= 0 || width % 2 || height % 2)
    fail(path, "video frames must have positive even sides, got " + std::to_string(width) + "x" + std::to_string(height));
  if (options.fps < 1) fail(path, "frame rate must be >= 1");
  static int counter = 0;
  const std::filesystem::path p(path);
  // NAME.tmp.PID.N: removed on SIGINT / SIGTERM, and by the next run when this process died (io/output.h).
  m.tmp = path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  m.signal_slot = io::register_partial_output(m.tmp, false);

  av_log_set_level(AV_LOG_ERROR);  // no encoder statistics on stderr
  m.check(avformat_alloc_output_context2(&m.fmt, nullptr, "mp4", m.tmp.c_str()), "cannot create an MP4 container");
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_H264);
  if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
  if (!codec) fail(path, "this FFmpeg build has neither an H.264 nor an MPEG-4 encoder");
  m.codec_name = codec->name;
  m.stream = avformat_new_stream(m.fmt, nullptr);
  if (!m.stream) fail(path, "cannot add a video stream");
  m.enc = avcodec_alloc_context3(codec);
  if (!m.enc) fail(path, "cannot allocate the encoder");
  m.enc->width = width;
  m.enc->height = height;
  m.enc->pix_fmt = AV_PIX_FMT_YUV420P;
  m.enc->time_base = AVRational{1, options.fps};
  m.enc->framerate = AVRational{options.fps, 1};
  m.enc->gop_size = 12;
  m.enc->thread_count = 1;  // deterministic bitstream
  if (m.fmt->oformat->flags & AVFMT_GLOBALHEADER) m.enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  if (m.codec_name == "libx264") {
    av_opt_set(m.enc->priv_data, "preset", "medium", 0);
    av_opt_set(m.enc->priv_data, "crf", std::to_string(options.crf).c_str(), 0);
  } else {
    m.enc->bit_rate = int64_t(width) * height * options.fps / 2;  // ~0.5 bit per pixel
  }
  m.check(avcodec_open2(m.enc, codec, nullptr), "cannot open encoder " + m.codec_name);
  m.check(avcodec_parameters_from_context(m.stream->codecpar, m.enc), "encoder parameters");
  m.stream->time_base = m.enc->time_base;
  m.check(avio_open(&m.fmt->pb, m.tmp.c_str(), AVIO_FLAG_WRITE), "cannot open " + m.tmp + " for writing");
  m.check(avformat_write_header(m.fmt, nullptr), "writing the MP4 header");
  m.header = true;
  m.frame = av_frame_alloc();
  m.pkt = av_packet_alloc();
  if (!m.frame || !m.pkt) fail(path, "out of memory");
  m.frame->format = AV_PIX_FMT_YUV420P;
  m.frame->width = width;
  m.frame->height = height;
  m.check(av_frame_get_buffer(m.frame, 0), "frame buffer");
  // BT.601 limited range (what imageio-ffmpeg's default rgb24 -> yuv420p conversion gives).
  m.sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P, SWS_BICUBIC | SWS_ACCURATE_RND,
                         nullptr, nullptr, nullptr);
  if (!m.sws) fail(path, "cannot create the colour converter");
}

VideoWriter::~VideoWriter() = default;

void VideoWriter::add_frame(const uint8_t* rgb) {
  Impl& m = *impl_;
  if (m.finished) fail(m.path, "add_frame after finish");
  m.check(av_frame_make_writable(m.frame), "frame buffer");
  const uint8_t* src[1] = {rgb};
  const int stride[1] = {3 * m.width};
  sws_scale(m.sws, src, stride, 0, m.height, m.frame->data, m.frame->linesize);
  m.frame->pts = m.count++;
  m.drain(m.frame);
}

void VideoWriter::finish() {
  Impl& m = *impl_;
  if (m.finished) return;
  if (m.count == 0) fail(m.path, "no frames to write");
  m.drain(nullptr);
  m.check(av_write_trailer(m.fmt), "writing the MP4 trailer");
  m.check(avio_closep(&m.fmt->pb), "closing");
  std::error_code ec;
  std::filesystem::rename(m.tmp, m.path, ec);
  if (ec) fail(m.path, "cannot rename " + m.tmp + " into place: " + ec.message());
  m.finished = true;
  io::unregister_partial_output(m.signal_slot);
  m.signal_slot = -1;
}

int64_t VideoWriter::frames() const { return impl_->count; }
const std::string& VideoWriter::codec() const { return impl_->codec_name; }

}  // namespace lq::media
