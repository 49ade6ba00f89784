// Test helper for tests/media/preprocess_parity_test.py: runs Lance's frame transform on one image and
// writes what each step produced.
//   media_dump IMAGE RESOLUTION OUT.safetensors
// OUT holds "resized" U8 [h, w, 3] (the bucket crop + PIL-exact BICUBIC resize) and "normalized"
// F32 [3, H, W] (divisible crop to 28, CLIP mean / std), as the ViT transform makes them.
#include <cstdio>
#include <string>

#include "io/error.h"
#include "io/safetensors.h"
#include "media/image_io.h"
#include "media/lance_transform.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: media_dump IMAGE RESOLUTION OUT.safetensors\n");
    return 2;
  }
  try {
    using namespace lq::media;
    const RgbImage im = read_image(argv[1]);
    FrameTransform t = vit_image_transform();
    t.resolution = std::stoi(argv[2]);
    const Bucket b = nearest_bucket(lance_buckets(t), im.width, im.height);
    const RgbImage r = bucket_resize(im, b, t.filter);
    const FrameTensor x = transform_frames({im}, t, argv[1]);
    lq::io::SafetensorsWriter w(argv[3]);
    w.declare("resized", lq::io::DType::U8, {r.height, r.width, 3});
    w.declare("normalized", lq::io::DType::F32, {3, x.h, x.w});
    w.write(r.rgb.data(), r.rgb.size());
    w.write(x.data.data(), x.data.size() * sizeof(float));
    w.finish();
  } catch (const lq::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
