// Lance's frame transform (data/transforms.py VideoTransform, mode "bucket"), bit-exact to the
// reference pipeline on PIL images:
//   1. buckets: for each aspect ratio w:h the (height, width) near area resolution^2 whose sides are
//      multiples of `bucket_stride` (BucketResize.init_buckets, Python's round halves to even);
//   2. the bucket whose ratio is nearest to the frame's w/h (first on ties);
//   3. torchvision RandomResizedCrop(bucket, scale=(1, 1), ratio=(r, r)): the full frame when its ratio is
//      r (within rounding), else the centred crop of ratio r; then PIL's BICUBIC resize to the bucket.
//      NaResize passes its default interpolation (BICUBIC) to BucketResize, so BucketResize's own LANCZOS
//      default is never used, whatever the docs say;
//   4. to [0, 1] (x / 255 in f32), centred crop of each side to a multiple of `divisible` (torchvision
//      center_crop: offsets round((size - crop) / 2), halves to even);
//   5. (x - mean) / std per channel, in f32.
// Lance's settings: the ViT uses resolution 672 (images) / 616 (video), bucket_stride 16, divisible 28,
// CLIP mean/std; the VAE uses its own resolution, stride 16, divisible 16, mean = std = 0.5.
// Where torchvision draws a random offset (a frame within 2 pixels of the bucket ratio) we take the centre.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "media/image_io.h"
#include "media/resample.h"

namespace lq::media {

struct Bucket {
  int height = 0, width = 0;
  double ratio = 0;  // width / height
};

struct FrameTransform {
  int resolution = 672;
  int bucket_stride = 16;
  int divisible = 28;
  std::vector<std::string> aspect_ratios = {"21:9", "16:9", "4:3", "1:1", "3:4", "9:16"};
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
  ResampleFilter filter = ResampleFilter::Bicubic;
};
// The ViT transforms Lance uses for x2t: images at 672, video at 616.
FrameTransform vit_image_transform();
FrameTransform vit_video_transform();

std::vector<Bucket> lance_buckets(const FrameTransform& t);
Bucket nearest_bucket(const std::vector<Bucket>& buckets, int width, int height);

// RandomResizedCrop(scale=(1,1), ratio=(r,r)).get_params on a width x height frame (see above).
struct CropBox {
  int left = 0, top = 0, width = 0, height = 0;
};
CropBox bucket_crop_box(int width, int height, double ratio);

// Steps 1-3: the frame cropped and resized to its bucket (8-bit, what PIL returns).
RgbImage bucket_resize(const RgbImage& frame, const Bucket& bucket, ResampleFilter filter);

// Normalised frames [T, 3, H, W] (f32), H and W multiples of `divisible`.
struct FrameTensor {
  int t = 0, h = 0, w = 0;
  std::vector<float> data;
};
// All frames share the bucket chosen from the first frame's size (as BucketResize on a list); every
// frame must have that size. Throws lq::Error naming `what` for an empty list or mixed sizes.
FrameTensor transform_frames(const std::vector<RgbImage>& frames, const FrameTransform& t, const std::string& what);

}  // namespace lq::media
