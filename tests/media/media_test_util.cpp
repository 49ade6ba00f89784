#include "media_test_util.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}
#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace lq::media::test {

namespace {

[[noreturn]] void png_err(png_structp, png_const_charp msg) { throw std::runtime_error(msg); }

void write_png_impl(const std::string& path, int w, int h, int color_type, const std::vector<uint8_t>& rows_data,
                    int row_bytes, const std::vector<uint8_t>& palette, const std::vector<uint8_t>& trns) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot create " + path);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, png_err, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, png_uint_32(w), png_uint_32(h), 8, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    std::vector<png_color> pal(palette.size() / 3);
    for (size_t i = 0; i < pal.size(); ++i) pal[i] = {palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]};
    png_set_PLTE(png, info, pal.data(), int(pal.size()));
    if (!trns.empty()) png_set_tRNS(png, info, trns.data(), int(trns.size()), nullptr);
  }
  png_write_info(png, info);
  for (int y = 0; y < h; ++y) png_write_row(png, const_cast<png_bytep>(rows_data.data() + size_t(y) * size_t(row_bytes)));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
}

void check(int rc, const char* what) {
  if (rc < 0) throw std::runtime_error(std::string("ffmpeg: ") + what + " failed (" + std::to_string(rc) + ")");
}

}  // namespace

void write_png(const std::string& path, const std::vector<uint8_t>& px, int w, int h, int channels) {
  const int ct = channels == 1   ? PNG_COLOR_TYPE_GRAY
                 : channels == 2 ? PNG_COLOR_TYPE_GRAY_ALPHA
                 : channels == 3 ? PNG_COLOR_TYPE_RGB
                                 : PNG_COLOR_TYPE_RGB_ALPHA;
  write_png_impl(path, w, h, ct, px, w * channels, {}, {});
}

void write_png_palette(const std::string& path, const std::vector<uint8_t>& idx, int w, int h,
                       const std::vector<uint8_t>& palette_rgb, const std::vector<uint8_t>& trns) {
  write_png_impl(path, w, h, PNG_COLOR_TYPE_PALETTE, idx, w, palette_rgb, trns);
}

void write_jpeg(const std::string& path, const std::vector<uint8_t>& px, int w, int h, int channels, int quality) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot create " + path);
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = channels;
  c.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(px.data() + size_t(c.next_scanline) * size_t(w) * size_t(channels));
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

void write_webp_lossless(const std::string& path, const std::vector<uint8_t>& px, int w, int h, int channels) {
  uint8_t* out = nullptr;
  const size_t n = channels == 4 ? WebPEncodeLosslessRGBA(px.data(), w, h, w * 4, &out)
                                 : WebPEncodeLosslessRGB(px.data(), w, h, w * 3, &out);
  if (!n) throw std::runtime_error("WebP encoding failed");
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(out), std::streamsize(n));
  WebPFree(out);
}

void write_video(const std::string& path, const std::vector<std::vector<uint8_t>>& frames, int w, int h, int fps,
                 const std::string& codec_name) {
  const bool raw = codec_name == "rawvideo";
  AVFormatContext* oc = nullptr;
  check(avformat_alloc_output_context2(&oc, nullptr, raw ? "nut" : "mp4", path.c_str()), "output context");
  const AVCodec* codec = avcodec_find_encoder(raw ? AV_CODEC_ID_RAWVIDEO : AV_CODEC_ID_MPEG4);
  if (!codec) throw std::runtime_error("encoder " + codec_name + " not available");
  AVStream* st = avformat_new_stream(oc, nullptr);
  AVCodecContext* enc = avcodec_alloc_context3(codec);
  enc->width = w;
  enc->height = h;
  enc->time_base = AVRational{1, fps};
  enc->framerate = AVRational{fps, 1};
  enc->pix_fmt = raw ? AV_PIX_FMT_RGB24 : AV_PIX_FMT_YUV420P;
  if (!raw) {
    enc->max_b_frames = 2;
    enc->gop_size = 12;
    enc->bit_rate = 4000000;
    enc->flags |= AV_CODEC_FLAG_QSCALE;
    enc->global_quality = FF_QP2LAMBDA * 2;
  }
  if (oc->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  check(avcodec_open2(enc, codec, nullptr), "open encoder");
  check(avcodec_parameters_from_context(st->codecpar, enc), "parameters");
  st->time_base = enc->time_base;
  st->avg_frame_rate = enc->framerate;
  check(avio_open(&oc->pb, path.c_str(), AVIO_FLAG_WRITE), "avio_open");
  check(avformat_write_header(oc, nullptr), "write header");
  AVFrame* fr = av_frame_alloc();
  fr->format = enc->pix_fmt;
  fr->width = w;
  fr->height = h;
  check(av_frame_get_buffer(fr, 0), "frame buffer");
  SwsContext* sws = sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, enc->pix_fmt, SWS_BICUBIC | SWS_ACCURATE_RND, nullptr,
                                   nullptr, nullptr);
  AVPacket* pkt = av_packet_alloc();
  auto drain = [&] {
    while (true) {
      const int rc = avcodec_receive_packet(enc, pkt);
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) break;
      check(rc, "receive packet");
      av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
      pkt->stream_index = st->index;
      check(av_interleaved_write_frame(oc, pkt), "write frame");
    }
  };
  for (size_t i = 0; i < frames.size(); ++i) {
    check(av_frame_make_writable(fr), "writable");
    const uint8_t* src[1] = {frames[i].data()};
    const int src_stride[1] = {w * 3};
    sws_scale(sws, src, src_stride, 0, h, fr->data, fr->linesize);
    fr->pts = int64_t(i);
    check(avcodec_send_frame(enc, fr), "send frame");
    drain();
  }
  check(avcodec_send_frame(enc, nullptr), "flush");
  drain();
  check(av_write_trailer(oc), "trailer");
  sws_freeContext(sws);
  av_packet_free(&pkt);
  av_frame_free(&fr);
  avcodec_free_context(&enc);
  avio_closep(&oc->pb);
  avformat_free_context(oc);
}

}  // namespace lq::media::test
