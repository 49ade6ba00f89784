// The native Wan2.2 VAE against diffusers' AutoencoderKLWan (golden: tools/gen_wan_vae_golden.py, a
// reduced random-weight model with the Wan2.2 structure): decode of a picture and of a 9-frame clip
// (3 decoder chunks through the temporal caches), encode of both (1 + 4 + 4 frame encoder chunks),
// within 1e-4 relative (L2 over the tensor, and the worst element against the tensor's RMS). The same
// weights read from Wan's original .pth naming (torch.save) are identical tensors and decode
// identically. Every conv backend is checked. Plus: the full-size tensor list equals diffusers'
// (196 tensors, 705 M parameters), original-name mapping examples, strict load errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/error.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "kernels/conv.h"
#include "test_paths.h"
#include "vae/wan_vae.h"
#include "vae/weights.h"

namespace {

namespace fs = std::filesystem;
using lq::vae::WanVae;

std::string data(const std::string& name) { return std::string(LQ_SOURCE_DIR) + "/tests/vae/data/" + name; }

struct Err {
  double rel_l2 = 0, worst_vs_rms = 0;
};

Err compare(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double num = 0, den = 0, worst = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
    worst = std::max(worst, std::fabs(d));
  }
  const double rms = std::sqrt(den / double(std::max<size_t>(ref.size(), 1)));
  return {std::sqrt(num / den), worst / rms};
}

#define EXPECT_CLOSE(got, ref, what)                                                        \
  do {                                                                                      \
    const Err e_ = compare(got, ref);                                                       \
    EXPECT_LE(e_.rel_l2, 1e-4) << what << " relative L2";                                   \
    EXPECT_LE(e_.worst_vs_rms, 1e-4) << what << " worst element / RMS";                     \
  } while (0)

class Golden {
 public:
  Golden() : io_(data("wan_vae_tiny_io.safetensors")) {}
  std::vector<float> get(const std::string& n) const { return io_.read_f32(n); }
  std::vector<int64_t> shape(const std::string& n) const { return io_.info(n).shape; }

 private:
  lq::io::TensorStore io_;
};

std::vector<lq::kernels::ConvBackend> backends() {
  std::vector<lq::kernels::ConvBackend> b{lq::kernels::ConvBackend::Gemm};
  if (lq::kernels::dnnl_available()) b.push_back(lq::kernels::ConvBackend::Dnnl);
  b.push_back(lq::kernels::ConvBackend::Auto);
  return b;
}

TEST(WanVae, DecodeMatchesDiffusers) {
  const Golden g;
  for (auto backend : backends()) {
    const WanVae vae = WanVae::load(data("wan_vae_tiny"), backend);
    EXPECT_EQ(vae.config().base_dim, 3);
    EXPECT_EQ(vae.config().decoder_base_dim, 4);
    for (const char* tag : {"image", "video"}) {
      const auto s = g.shape(std::string(tag) + "_latents");  // [t, h, w, 48]
      const auto lat = g.get(std::string(tag) + "_latents");
      int chunks = 0, frames = 0;
      std::vector<float> got;
      vae.decode(lat.data(), int(s[0]), int(s[1]), int(s[2]), [&](const float* rgb, int n, int H, int W) {
        ++chunks;
        frames += n;
        EXPECT_EQ(H, 16 * s[1]);
        EXPECT_EQ(W, 16 * s[2]);
        got.insert(got.end(), rgb, rgb + size_t(n) * H * W * 3);
      });
      EXPECT_EQ(chunks, s[0]);
      EXPECT_EQ(frames, 4 * (s[0] - 1) + 1);
      EXPECT_CLOSE(got, g.get(std::string(tag) + "_decoded"), tag << " decode, backend " << lq::kernels::conv_backend_name(backend));
    }
  }
}

TEST(WanVae, EncodeMatchesDiffusers) {
  const Golden g;
  for (auto backend : backends()) {
    const WanVae vae = WanVae::load(data("wan_vae_tiny"), backend);
    for (const char* tag : {"image", "video"}) {
      const auto s = g.shape(std::string(tag) + "_pixels");  // [T, H, W, 3]
      const auto px = g.get(std::string(tag) + "_pixels");
      const lq::vae::Encoded e = vae.encode(px.data(), int(s[0]), int(s[1]), int(s[2]));
      EXPECT_EQ(e.t, 1 + (s[0] - 1) / 4);
      EXPECT_EQ(e.h, s[1] / 16);
      EXPECT_EQ(e.w, s[2] / 16);
      const std::string b = lq::kernels::conv_backend_name(backend);
      EXPECT_CLOSE(e.mu, g.get(std::string(tag) + "_mu"), tag << " mu, backend " << b);
      EXPECT_CLOSE(e.logvar, g.get(std::string(tag) + "_logvar"), tag << " logvar, backend " << b);
    }
  }
}

TEST(WanVae, ReparameterizeIsLancesFormula) {
  lq::vae::Encoded e;
  e.mu = {0.5f, -1.0f};
  e.logvar = {0.0f, std::log(4.0f)};
  const float eps[2] = {2.0f, -0.25f};
  const auto s = lq::vae::reparameterize(e, eps);
  EXPECT_FLOAT_EQ(s[0], 2.5f);           // 0.5 + 1 * 2
  EXPECT_FLOAT_EQ(s[1], -1.0f - 0.5f);   // -1 + 2 * -0.25
}

TEST(WanVae, OriginalPthHoldsTheSameTensors) {
  const lq::io::TorchCheckpoint pth(data("wan_vae_tiny.pth"));
  const lq::io::TensorStore st(data("wan_vae_tiny/diffusion_pytorch_model.safetensors"));
  EXPECT_EQ(pth.names().size(), st.names().size());
  for (const std::string& n : st.names()) {
    const std::string o = lq::vae::original_name(n);
    ASSERT_TRUE(pth.has(o)) << n << " -> " << o;
    EXPECT_EQ(pth.info(o).shape, st.info(n).shape) << o;
    EXPECT_EQ(pth.info(o).dtype, lq::io::DType::F16) << o;
    // Identical bytes, hence identical tensors.
    const auto a = pth.bytes(o);
    const auto b = st.file_of(n).bytes(st.info(n));
    ASSERT_EQ(a.size(), b.size()) << o;
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size())) << o;
  }
}

TEST(WanVae, PthDecodesLikeDiffusersLayout) {
  const Golden g;
  const WanVae a = WanVae::load(data("wan_vae_tiny")), b = WanVae::load(data("wan_vae_tiny.pth"));
  EXPECT_EQ(b.config().base_dim, 3);  // inferred from the filters
  EXPECT_EQ(b.config().decoder_base_dim, 4);
  const auto lat = g.get("video_latents");
  const auto s = g.shape("video_latents");
  EXPECT_EQ(a.decode(lat.data(), int(s[0]), int(s[1]), int(s[2])), b.decode(lat.data(), int(s[0]), int(s[1]), int(s[2])));
}

TEST(WanVae, FullSizeTensorListMatchesDiffusers) {
  // diffusers AutoencoderKLWan(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, ...):
  // 196 tensors, encoder + quant_conv 149,637,088 and decoder + post_quant_conv 555,051,580 parameters.
  const auto t = lq::vae::expected_tensors(lq::vae::wan22_config());
  EXPECT_EQ(t.size(), 196u);
  int64_t enc = 0, dec = 0;
  for (const auto& s : t) {
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    (s.name.rfind("decoder", 0) == 0 || s.name.rfind("post_quant", 0) == 0 ? dec : enc) += n;
  }
  EXPECT_EQ(enc, 149637088);
  EXPECT_EQ(dec, 555051580);
}

TEST(WanVae, OriginalNames) {
  using lq::vae::original_name;
  EXPECT_EQ(original_name("quant_conv.weight"), "conv1.weight");
  EXPECT_EQ(original_name("post_quant_conv.bias"), "conv2.bias");
  EXPECT_EQ(original_name("encoder.conv_in.weight"), "encoder.conv1.weight");
  EXPECT_EQ(original_name("decoder.norm_out.gamma"), "decoder.head.0.gamma");
  EXPECT_EQ(original_name("decoder.conv_out.bias"), "decoder.head.2.bias");
  EXPECT_EQ(original_name("encoder.mid_block.resnets.1.conv2.weight"), "encoder.middle.2.residual.6.weight");
  EXPECT_EQ(original_name("decoder.mid_block.attentions.0.to_qkv.weight"), "decoder.middle.1.to_qkv.weight");
  EXPECT_EQ(original_name("encoder.down_blocks.2.resnets.0.conv_shortcut.weight"),
            "encoder.downsamples.2.downsamples.0.shortcut.weight");
  EXPECT_EQ(original_name("encoder.down_blocks.1.downsampler.time_conv.bias"), "encoder.downsamples.1.downsamples.2.time_conv.bias");
  EXPECT_EQ(original_name("decoder.up_blocks.0.upsampler.resample.1.weight"), "decoder.upsamples.0.upsamples.3.resample.1.weight");
  EXPECT_EQ(original_name("decoder.up_blocks.3.resnets.2.norm1.gamma"), "decoder.upsamples.3.upsamples.2.residual.0.gamma");
  EXPECT_THROW(original_name("decoder.something.weight"), lq::Error);
}

// A copy of the tiny model with one tensor dropped / reshaped must be refused before any weight is read.
TEST(WanVae, StrictLoadErrors) {
  const std::string dir = lq::test::scratch_dir("wan_vae_strict");
  const lq::io::TensorStore st(data("wan_vae_tiny/diffusion_pytorch_model.safetensors"));
  auto write_variant = [&](const std::string& sub, const std::string& skip, const std::string& reshape) {
    fs::create_directories(dir + "/" + sub);
    fs::copy_file(data("wan_vae_tiny/config.json"), dir + "/" + sub + "/config.json", fs::copy_options::overwrite_existing);
    lq::io::SafetensorsWriter w(dir + "/" + sub + "/diffusion_pytorch_model.safetensors");
    for (const auto& n : st.names()) {
      if (n == skip) continue;
      auto shape = st.info(n).shape;
      if (n == reshape) shape = {shape[0] * shape[1]};  // same bytes, wrong shape
      w.declare(n, st.info(n).dtype, shape);
    }
    for (const auto& n : st.names()) {
      if (n == skip) continue;
      const auto b = st.file_of(n).bytes(st.info(n));
      w.write(b.data(), b.size());
    }
    w.finish();
    return dir + "/" + sub;
  };
  try {
    WanVae::load(write_variant("missing", "decoder.up_blocks.1.resnets.2.conv1.bias", ""));
    FAIL() << "a missing tensor was accepted";
  } catch (const lq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("decoder.up_blocks.1.resnets.2.conv1.bias"), std::string::npos) << e.what();
  }
  try {
    WanVae::load(write_variant("reshaped", "", "encoder.mid_block.attentions.0.proj.weight"));
    FAIL() << "a wrongly shaped tensor was accepted";
  } catch (const lq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("wrong shape"), std::string::npos) << e.what();
  }
  // Wan2.1 configs (is_residual false) are refused with a clear message.
  fs::create_directories(dir + "/wan21");
  std::ofstream(dir + "/wan21/config.json") << R"({"_class_name": "AutoencoderKLWan", "is_residual": false, "z_dim": 16})";
  std::ofstream(dir + "/wan21/diffusion_pytorch_model.safetensors") << "x";
  try {
    WanVae::load(dir + "/wan21");
    FAIL() << "Wan2.1 config accepted";
  } catch (const lq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Wan2.1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(WanVae::load(dir + "/does-not-exist"), lq::Error);
}

// diffusers config.json values are read strictly: typed, ranged, never truncated, naming file and key;
// a symbolic link out of the VAE directory is not followed.
TEST(WanVae, ConfigIsParsedStrictly) {
  const std::string dir = lq::test::scratch_dir("wan_vae_config");
  const nlohmann::json good = nlohmann::json::parse(std::ifstream(data("wan_vae_tiny/config.json")));
  auto message = [&](const std::string& key, const nlohmann::json& value) -> std::string {
    nlohmann::json j = good;
    j[key] = value;
    std::ofstream(dir + "/config.json") << j.dump();
    try {
      lq::vae::parse_diffusers_config(dir + "/config.json");
    } catch (const lq::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message("z_dim", good["z_dim"]), "");
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"z_dim", 48.5}, {"base_dim", 4294967298.0}, {"num_res_blocks", 1000000000}, {"dim_mult", {1, 2, "4"}},
           {"latents_std", {1.0, "x"}}, {"is_residual", "yes"}, {"patch_size", -2}}) {
    const std::string m = message(key, value);
    EXPECT_NE(m.find(dir + "/config.json"), std::string::npos) << key << ": " << m;
    EXPECT_NE(m.find(key), std::string::npos) << key << ": " << m;
  }
  // config.json linking out of the VAE directory is refused, naming the link.
  const std::string linked = dir + "/linked";
  fs::create_directories(linked);
  fs::copy_file(data("wan_vae_tiny/diffusion_pytorch_model.safetensors"), linked + "/diffusion_pytorch_model.safetensors",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir + "/outside.json") << good.dump();
  fs::remove(linked + "/config.json");
  fs::create_symlink(dir + "/outside.json", linked + "/config.json");
  try {
    WanVae::load(linked);
    FAIL() << "a config.json linking out of the VAE directory was read";
  } catch (const lq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
}

TEST(WanVae, BadInputs) {
  const WanVae vae = WanVae::load(data("wan_vae_tiny"));
  std::vector<float> px(size_t(2 * 32 * 32 * 3), 0.0f);
  EXPECT_THROW(vae.encode(px.data(), 2, 32, 32), lq::Error);   // 2 frames is not 4k + 1
  EXPECT_THROW(vae.encode(px.data(), 1, 24, 32), lq::Error);   // 24 is not a multiple of 16
}

}  // namespace
