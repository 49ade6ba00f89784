// The native ViT against Hugging Face transformers' Qwen2.5-VL vision tower (golden made by
// tools/make_vit_golden.py), window order and patch order against hand-computed cases, strict tensor checks.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "io/safetensors.h"
#include "vit/vit.h"
#include "vit/vit_config.h"
#include "vit/vit_input.h"
#include "vit/vit_synth.h"
#include "test_paths.h"

namespace lq::vit {
namespace {

namespace fs = std::filesystem;

std::string golden_dir() { return std::string(LQ_SOURCE_DIR) + "/tests/vit/data/vit-golden"; }

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(Vit, MatchesTransformersQwen25VisionTower) {
  const Vit vit = Vit::load(golden_dir());
  EXPECT_EQ(vit.config().depth, 3);
  EXPECT_EQ(vit.config().window_units(), 2);
  io::TensorStore g(golden_dir() + "/golden.safetensors");
  for (int n = 0; n < 2; ++n) {
    const std::string s = std::to_string(n);
    const auto in = g.read_f32("inputs_" + s), want = g.read_f32("outputs_" + s);
    const auto grid_f = g.read_f32("grid_" + s);
    const std::array<int, 3> grid{int(grid_f[0]), int(grid_f[1]), int(grid_f[2])};
    const auto got = vit.forward(in.data(), grid);
    ASSERT_EQ(got.size(), want.size()) << "case " << n;
    const double rel = rel_l2(got, want);
    EXPECT_LE(rel, 1e-4) << "case " << n;
    double worst = 0, scale = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, std::abs(double(got[i]) - want[i]));
      scale = std::max(scale, std::abs(double(want[i])));
    }
    EXPECT_LE(worst, 1e-4 * scale) << "case " << n;
    std::printf("case %d grid (%d, %d, %d): rel L2 %.2e, max abs %.2e (max |y| %.2f)\n", n, grid[0], grid[1], grid[2], rel, worst,
                scale);
  }
}

TEST(Vit, WindowsAndTheFullAttentionBlockMatter) {
  // All blocks full (or all windowed) gives a clearly different output: the golden checks the split.
  const std::string d = lq::test::scratch_dir("vit_allfull");
  fs::copy_file(golden_dir() + "/vit.safetensors", d + "/vit.safetensors");
  io::TensorStore g(golden_dir() + "/golden.safetensors");
  const auto in = g.read_f32("inputs_0"), want = g.read_f32("outputs_0");
  for (const char* full : {"[0, 1, 2]", "[]"}) {
    std::ifstream src(golden_dir() + "/config.json");
    nlohmann::json j = nlohmann::json::parse(src);
    j["fullatt_block_indexes"] = nlohmann::json::parse(full);
    std::ofstream(d + "/config.json") << j.dump();
    const Vit v = Vit::load(d);
    EXPECT_GT(rel_l2(v.forward(in.data(), {2, 10, 6}), want), 1e-2) << full;
  }
}

TEST(Vit, WindowOrderHandComputed) {
  VitConfig c;
  c.patch_size = 4;
  c.window_size = 16;  // 2 units
  // 10 x 6 patches = 5 x 3 units; windows of 2 x 2 units, padded to 6 x 4.
  const WindowOrder o = window_order(10, 6, c);
  EXPECT_EQ(o.units, (std::vector<int32_t>{0, 1, 3, 4, 2, 5, 6, 7, 9, 10, 8, 11, 12, 13, 14}));
  EXPECT_EQ(o.window_patches, (std::vector<int64_t>{16, 8, 16, 8, 8, 4}));
  // 8 x 8 patches = 4 x 4 units: 4 full windows (the extra padded row and column of windows are empty).
  const WindowOrder p = window_order(8, 8, c);
  EXPECT_EQ(p.window_patches, (std::vector<int64_t>{16, 16, 16, 16}));
  EXPECT_EQ(p.units[4], 2);
  // Lance's ViT: 672 x 672 -> 48 x 48 patches, 24 x 24 units, windows of 4 x 4 units: 36 windows of 64 patches.
  const WindowOrder l = window_order(48, 48, VitConfig{});
  EXPECT_EQ(l.window_patches.size(), 36u);
  EXPECT_EQ(l.units.size(), 576u);
}

TEST(Vit, RotaryAnglesFollowPatchRowAndColumn) {
  VitConfig c;  // head_dim 80: 20 frequencies per axis
  const auto a = rotary_angles(4, 4, c);
  // Patch 6 in merge order = unit 1 (row 0, col 1 of units), sub (1, 0): pixel row 1, col 2.
  const float inv1 = 1.0f / std::pow(10000.0f, 2.0f / 40.0f);
  EXPECT_FLOAT_EQ(a[6 * 40 + 0], 1.0f);
  EXPECT_FLOAT_EQ(a[6 * 40 + 1], 1.0f * inv1);
  EXPECT_FLOAT_EQ(a[6 * 40 + 20], 2.0f);
  EXPECT_FLOAT_EQ(a[6 * 40 + 21], 2.0f * inv1);
}

TEST(VitInput, PatchOrderHandComputed) {
  VitConfig c;
  c.patch_size = 1;
  c.temporal_patch_size = 2;
  c.spatial_merge_size = 2;
  media::FrameTensor f;
  f.t = 2;
  f.h = 2;
  f.w = 4;
  f.data.resize(2 * 3 * 2 * 4);
  for (int t = 0; t < 2; ++t)
    for (int ch = 0; ch < 3; ++ch)
      for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 4; ++x) f.data[size_t(((t * 3 + ch) * 2 + y) * 4 + x)] = float(1000 * t + 100 * ch + 10 * y + x);
  const VitInput in = patchify(f, c);
  EXPECT_EQ(in.grid, (std::array<int, 3>{1, 2, 4}));
  ASSERT_EQ(in.patches.size(), 8u * 6u);
  // Patches: unit (0,0) = pixels (0,0) (0,1) (1,0) (1,1), then unit (0,1) = (0,2) (0,3) (1,2) (1,3).
  const int ys[8] = {0, 0, 1, 1, 0, 0, 1, 1}, xs[8] = {0, 1, 0, 1, 2, 3, 2, 3};
  for (int k = 0; k < 8; ++k)
    for (int ch = 0; ch < 3; ++ch)
      for (int t = 0; t < 2; ++t)
        EXPECT_EQ(in.patches[size_t(k * 6 + ch * 2 + t)], float(1000 * t + 100 * ch + 10 * ys[k] + xs[k])) << k;
  // An image is repeated to 2 frames (one temporal patch), an odd video gets its last frame again.
  media::FrameTensor one = f;
  one.t = 1;
  one.data.resize(f.data.size() / 2);
  const VitInput img = vit_input(one, MediaKind::Image, c);
  EXPECT_EQ(img.grid[0], 1);
  for (size_t i = 0; i < img.patches.size(); i += 2) EXPECT_EQ(img.patches[i], img.patches[i + 1]);
  media::FrameTensor three = f;
  three.t = 3;
  three.data.insert(three.data.end(), f.data.begin(), f.data.begin() + long(f.data.size() / 2));
  EXPECT_EQ(vit_input(three, MediaKind::Video, c).grid[0], 2);
}

TEST(Vit, StrictTensorChecks) {
  const std::string d = lq::test::scratch_dir("vit_strict");
  fs::copy_file(golden_dir() + "/config.json", d + "/config.json");
  io::TensorStore src(golden_dir() + "/vit.safetensors");
  auto write = [&](const std::string& skip, const std::string& extra, const std::string& reshape) {
    io::SafetensorsWriter w(d + "/vit.safetensors");
    std::vector<std::pair<std::string, std::vector<float>>> data;
    for (const auto& n : src.names()) {
      if (n == skip) continue;
      auto shape = src.info(n).shape;
      auto v = src.read_f32(n);
      if (n == reshape) shape = {int64_t(v.size())};
      w.declare(n, io::DType::F32, shape);
      data.push_back({n, std::move(v)});
    }
    if (!extra.empty()) {
      w.declare(extra, io::DType::F32, {2});
      data.push_back({extra, {1, 2}});
    }
    for (const auto& [n, v] : data) w.write(v.data(), v.size() * 4);
    w.finish();
  };
  auto message = [&]() -> std::string {
    try {
      Vit::load(d);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  write("blocks.1.attn.qkv.bias", "", "");
  EXPECT_NE(message().find("missing: blocks.1.attn.qkv.bias"), std::string::npos) << message();
  write("", "blocks.1.attn.extra", "");
  EXPECT_NE(message().find("unexpected: blocks.1.attn.extra"), std::string::npos) << message();
  write("", "", "merger.mlp.0.weight");
  EXPECT_NE(message().find("mis-shaped: merger.mlp.0.weight"), std::string::npos) << message();
  EXPECT_THROW(Vit::load(lq::test::scratch_dir("vit_empty")), Error);
}

// Vision configs come with downloaded checkpoints: values are read strictly (typed, ranged, never
// truncated), errors name the file and the key, and nothing is sized from an unchecked value.
TEST(Vit, ConfigIsParsedStrictly) {
  auto message = [](const std::string& text) -> std::string {
    try {
      parse_vit_config(nlohmann::json::parse(text), "cfg.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message(R"({"depth": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": 96, "out_hidden_size": 32,
                        "fullatt_block_indexes": [1]})"), "");
  const std::string depth_frac = message(R"({"depth": 2.5})");
  EXPECT_NE(depth_frac.find("cfg.json"), std::string::npos) << depth_frac;
  EXPECT_NE(depth_frac.find("depth"), std::string::npos) << depth_frac;
  EXPECT_NE(message(R"({"hidden_size": 4294967552})").find("hidden_size"), std::string::npos);  // 2^32 + 256, not 256
  EXPECT_NE(message(R"({"depth": 1000000000})").find("depth"), std::string::npos);            // no 13e9-entry tensor list
  EXPECT_NE(message(R"({"num_heads": "16"})").find("num_heads"), std::string::npos);
  EXPECT_NE(message(R"({"rope_theta": -1})").find("rope_theta"), std::string::npos);
  EXPECT_NE(message(R"({"fullatt_block_indexes": [7, 99]})").find("fullatt_block_indexes"), std::string::npos);
  EXPECT_NE(message(R"({"vision_config": {"patch_size": 0}})").find("vision_config"), std::string::npos);
  EXPECT_NE(message("[1, 2]").find("not a JSON object"), std::string::npos);
}

TEST(VitSynth, SmallPresetLoadsAndRuns) {
  const std::string d = lq::test::scratch_dir("vit_synth");
  VitSynthOptions o;
  o.preset = "small";
  o.out_dir = d;
  o.out_hidden = 48;
  const VitSynthResult r = synthesize_vit(o);
  EXPECT_EQ(r.num_tensors, 1 + 4 * 12 + 5);
  const Vit v = Vit::load(d);
  EXPECT_EQ(v.config().out_hidden_size, 48);
  media::RgbImage im;
  im.width = 100;
  im.height = 60;
  im.rgb.assign(100 * 60 * 3, 0);
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = uint8_t((i * 37) % 251);
  media::FrameTransform t;
  t.resolution = 112;  // 16:9 bucket 144 x 80 -> 140 x 56 -> 10 x 4 patches... (multiples of 28)
  const VitInput in = image_input(im, v.config(), t);
  const auto y = v.forward(in.patches.data(), in.grid);
  EXPECT_EQ(int64_t(y.size()), in.llm_tokens(v.config()) * 48);
  for (float x : y) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(y, v.forward(in.patches.data(), in.grid));  // deterministic
  EXPECT_THROW(synthesize_vit(o), Error);             // refuses to overwrite without force
}

}  // namespace
}  // namespace lq::vit
