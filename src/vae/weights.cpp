#include "vae/weights.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"

namespace lq::vae {

namespace fs = std::filesystem;

int WanVaeConfig::spatial_ratio() const { return patch_size << (int(dim_mult.size()) - 1); }
int WanVaeConfig::temporal_ratio() const {
  int r = 1;
  for (bool t : temporal_downsample) r *= t ? 2 : 1;
  return r;
}

WanVaeConfig wan22_config() {
  WanVaeConfig c;
  c.latents_mean = {-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174,  0.1838,  0.1557,  -0.1382, 0.0542,
                    0.2813,  0.0891,  0.1570,  -0.0098, 0.0375,  -0.1825, -0.2246, -0.1207, -0.0698, 0.5109,
                    0.2665,  -0.2108, -0.2158, 0.2502,  -0.2055, -0.0322, 0.1109,  0.1567,  -0.0729, 0.0899,
                    -0.2799, -0.1230, -0.0313, -0.1649, 0.0117,  0.0723,  -0.2839, -0.2083, -0.0520, 0.3748,
                    0.0152,  0.1957,  0.1433,  -0.2944, 0.3573,  -0.0548, -0.1681, -0.0667};
  c.latents_std = {0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
                   0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
                   0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
                   0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744};
  return c;
}

namespace {

using Shape = std::vector<int64_t>;

void add_conv(std::vector<TensorSpec>& out, const std::string& p, int64_t cout, int64_t cin, Shape k) {
  Shape w{cout, cin};
  w.insert(w.end(), k.begin(), k.end());
  out.push_back({p + ".weight", w});
  out.push_back({p + ".bias", {cout}});
}

void add_resnet(std::vector<TensorSpec>& out, const std::string& p, int64_t in, int64_t o) {
  out.push_back({p + ".norm1.gamma", {in, 1, 1, 1}});
  add_conv(out, p + ".conv1", o, in, {3, 3, 3});
  out.push_back({p + ".norm2.gamma", {o, 1, 1, 1}});
  add_conv(out, p + ".conv2", o, o, {3, 3, 3});
  if (in != o) add_conv(out, p + ".conv_shortcut", o, in, {1, 1, 1});
}

void add_mid(std::vector<TensorSpec>& out, const std::string& p, int64_t d) {
  add_resnet(out, p + ".resnets.0", d, d);
  out.push_back({p + ".attentions.0.norm.gamma", {d, 1, 1}});
  add_conv(out, p + ".attentions.0.to_qkv", 3 * d, d, {1, 1});
  add_conv(out, p + ".attentions.0.proj", d, d, {1, 1});
  add_resnet(out, p + ".resnets.1", d, d);
}

std::string fmt_shape(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

std::vector<TensorSpec> expected_tensors(const WanVaeConfig& c) {
  std::vector<TensorSpec> out;
  const int S = int(c.dim_mult.size());
  const int64_t in_ch = 3LL * c.patch_size * c.patch_size, z = c.z_dim;
  std::vector<int64_t> enc{c.base_dim}, dec{int64_t(c.decoder_base_dim) * c.dim_mult.back()};
  for (int m : c.dim_mult) enc.push_back(int64_t(c.base_dim) * m);
  for (int i = S - 1; i >= 0; --i) dec.push_back(int64_t(c.decoder_base_dim) * c.dim_mult[i]);

  add_conv(out, "encoder.conv_in", enc[0], in_ch, {3, 3, 3});
  for (int i = 0; i < S; ++i) {
    const std::string b = "encoder.down_blocks." + std::to_string(i);
    for (int j = 0; j < c.num_res_blocks; ++j)
      add_resnet(out, b + ".resnets." + std::to_string(j), j == 0 ? enc[i] : enc[i + 1], enc[i + 1]);
    if (i != S - 1) {
      add_conv(out, b + ".downsampler.resample.1", enc[i + 1], enc[i + 1], {3, 3});
      if (c.temporal_downsample[size_t(i)]) add_conv(out, b + ".downsampler.time_conv", enc[i + 1], enc[i + 1], {3, 1, 1});
    }
  }
  add_mid(out, "encoder.mid_block", enc.back());
  out.push_back({"encoder.norm_out.gamma", {enc.back(), 1, 1, 1}});
  add_conv(out, "encoder.conv_out", 2 * z, enc.back(), {3, 3, 3});
  add_conv(out, "quant_conv", 2 * z, 2 * z, {1, 1, 1});
  add_conv(out, "post_quant_conv", z, z, {1, 1, 1});

  add_conv(out, "decoder.conv_in", dec[0], z, {3, 3, 3});
  add_mid(out, "decoder.mid_block", dec[0]);
  for (int i = 0; i < S; ++i) {
    const std::string b = "decoder.up_blocks." + std::to_string(i);
    for (int j = 0; j <= c.num_res_blocks; ++j)
      add_resnet(out, b + ".resnets." + std::to_string(j), j == 0 ? dec[i] : dec[i + 1], dec[i + 1]);
    if (i != S - 1) {
      add_conv(out, b + ".upsampler.resample.1", dec[i + 1], dec[i + 1], {3, 3});
      // temporal up-sampling mirrors the down-sampling: stage i uses temporal_downsample[S - 2 - i]
      if (c.temporal_downsample[size_t(S - 2 - i)])
        add_conv(out, b + ".upsampler.time_conv", 2 * dec[i + 1], dec[i + 1], {3, 1, 1});
    }
  }
  out.push_back({"decoder.norm_out.gamma", {dec.back(), 1, 1, 1}});
  add_conv(out, "decoder.conv_out", in_ch, dec.back(), {3, 3, 3});
  return out;
}

std::string original_name(const std::string& n, int nrb) {
  static const std::map<std::string, std::string> resnet{{"norm1.gamma", "residual.0.gamma"}, {"conv1", "residual.2"},
                                                         {"norm2.gamma", "residual.3.gamma"}, {"conv2", "residual.6"},
                                                         {"conv_shortcut", "shortcut"}};
  auto res = [&](const std::string& tail) {
    for (const auto& [k, v] : resnet)
      if (tail == k || tail.rfind(k + ".", 0) == 0) return v + tail.substr(k.size());
    fail("Wan VAE names", "unmapped resnet parameter " + n);
  };
  std::smatch m;
  if (n.rfind("quant_conv.", 0) == 0) return "conv1." + n.substr(11);
  if (n.rfind("post_quant_conv.", 0) == 0) return "conv2." + n.substr(16);
  static const std::regex io_re(R"((encoder|decoder)\.(conv_in|norm_out\.gamma|conv_out)(\..*)?)");
  static const std::regex mid_res(R"((encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*))");
  static const std::regex mid_attn(R"((encoder|decoder)\.mid_block\.attentions\.0\.(.*))");
  static const std::regex down_res(R"(encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*))");
  static const std::regex down_s(R"(encoder\.down_blocks\.(\d+)\.downsampler\.(.*))");
  static const std::regex up_res(R"(decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*))");
  static const std::regex up_s(R"(decoder\.up_blocks\.(\d+)\.upsampler\.(.*))");
  if (std::regex_match(n, m, io_re)) {
    const std::string part = m[2] == "conv_in" ? "conv1" : m[2] == "conv_out" ? "head.2" : "head.0.gamma";
    return m[1].str() + "." + part + m[3].str();
  }
  if (std::regex_match(n, m, mid_res)) return m[1].str() + ".middle." + std::to_string(2 * std::stoi(m[2])) + "." + res(m[3]);
  if (std::regex_match(n, m, mid_attn)) return m[1].str() + ".middle.1." + m[2].str();
  if (std::regex_match(n, m, down_res)) return "encoder.downsamples." + m[1].str() + ".downsamples." + m[2].str() + "." + res(m[3]);
  if (std::regex_match(n, m, down_s)) return "encoder.downsamples." + m[1].str() + ".downsamples." + std::to_string(nrb) + "." + m[2].str();
  if (std::regex_match(n, m, up_res)) return "decoder.upsamples." + m[1].str() + ".upsamples." + m[2].str() + "." + res(m[3]);
  if (std::regex_match(n, m, up_s)) return "decoder.upsamples." + m[1].str() + ".upsamples." + std::to_string(nrb + 1) + "." + m[2].str();
  fail("Wan VAE names", "unmapped parameter " + n);
}

WanVaeConfig parse_diffusers_config(const std::string& path) {
  // Strict reads (io/json_fields.h): typed, ranged, never truncated; the bounds keep the tensor list and
  // every width far inside int64 before the tensors are checked against them.
  const nlohmann::json j = io::read_json_object(path);
  const io::JsonFields f(j, path);
  WanVaeConfig c = wan22_config();
  const std::string cls = f.string("_class_name", std::string("AutoencoderKLWan"));
  if (cls != "AutoencoderKLWan") fail(path, "is a " + cls + " config, expected AutoencoderKLWan");
  if (!f.boolean("is_residual", false))
    fail(path, "is_residual is false: that is the Wan2.1 VAE; Lance uses the Wan2.2 VAE (is_residual true, z_dim 48)");
  c.z_dim = int(f.integer("z_dim", 1, 1024, c.z_dim));
  c.base_dim = int(f.integer("base_dim", 1, 4096, c.base_dim));
  c.decoder_base_dim = int(f.integer("decoder_base_dim", 1, 4096, c.base_dim));
  if (const nlohmann::json* dm = f.array("dim_mult")) {
    if (dm->size() < 2 || dm->size() > 8) fail(path, "dim_mult needs 2 to 8 entries");
    c.dim_mult.clear();
    for (const auto& v : *dm) c.dim_mult.push_back(int(f.integer_value(v, "dim_mult", 1, 64)));
  }
  c.num_res_blocks = int(f.integer("num_res_blocks", 1, 16, c.num_res_blocks));
  if (const nlohmann::json* td = f.array("temperal_downsample")) {
    c.temporal_downsample.clear();
    for (const auto& v : *td) {
      if (!v.is_boolean()) fail(path, "temperal_downsample: expected booleans");
      c.temporal_downsample.push_back(v.get<bool>());
    }
  }
  c.patch_size = int(f.integer("patch_size", 1, 64, 1));
  auto reals = [&](const char* key) {
    std::vector<float> out;
    if (const nlohmann::json* a = f.array(key))
      for (const auto& v : *a) {
        if (!v.is_number() || !std::isfinite(v.get<double>())) fail(path, std::string(key) + ": expected finite numbers");
        out.push_back(v.get<float>());
      }
    return out;
  };
  c.latents_mean = reals("latents_mean");
  c.latents_std = reals("latents_std");
  if (const nlohmann::json* as = f.array("attn_scales"); as && !as->empty())
    fail(path, "attn_scales must be empty (Wan2.2 has attention only in the middle blocks)");
  const int64_t in_ch = f.integer("in_channels", 1, 64, 3), out_ch = f.integer("out_channels", 1, 64, 3);
  if (c.patch_size != 2 || in_ch != 12 || out_ch != 12)
    fail(path, "expected patch_size 2 with 12 in/out channels (Wan2.2), got patch_size " + std::to_string(c.patch_size) +
                   ", in " + std::to_string(in_ch) + ", out " + std::to_string(out_ch));
  if (c.dim_mult.size() < 2 || c.temporal_downsample.size() != c.dim_mult.size() - 1)
    fail(path, "temperal_downsample needs one entry per down-sampling stage (len(dim_mult) - 1)");
  if (c.z_dim < 1 || c.base_dim < 1 || c.decoder_base_dim < 1 || c.num_res_blocks < 1)
    fail(path, "z_dim, base_dim, decoder_base_dim and num_res_blocks must be positive");
  if (int(c.latents_mean.size()) != c.z_dim || int(c.latents_std.size()) != c.z_dim)
    fail(path, "latents_mean and latents_std need z_dim = " + std::to_string(c.z_dim) + " entries each");
  for (float s : c.latents_std)
    if (!(s > 0)) fail(path, "latents_std entries must be positive");
  return c;
}

namespace {

// Checks the names and shapes a file offers against the expected list: missing, unexpected and
// mis-shaped tensors are reported together (up to 8 of each).
void check_against(const std::vector<TensorSpec>& want, const std::map<std::string, Shape>& have, const std::string& file,
                   const std::function<std::string(const std::string&)>& file_name_of) {
  std::vector<std::string> missing, wrong, unexpected;
  std::set<std::string> expected_names;
  for (const TensorSpec& t : want) {
    const std::string fname = file_name_of(t.name);
    expected_names.insert(fname);
    auto it = have.find(fname);
    if (it == have.end()) missing.push_back(fname);
    else if (it->second != t.shape) wrong.push_back(fname + " is " + fmt_shape(it->second) + ", expected " + fmt_shape(t.shape));
  }
  for (const auto& [n, s] : have)
    if (!expected_names.count(n)) unexpected.push_back(n);
  if (missing.empty() && wrong.empty() && unexpected.empty()) return;
  std::string msg = "does not match the Wan2.2 VAE layout:";
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    msg += std::string("\n  ") + what + " (" + std::to_string(v.size()) + "):";
    for (size_t i = 0; i < v.size() && i < 8; ++i) msg += "\n    " + v[i];
    if (v.size() > 8) msg += "\n    ...";
  };
  list("missing", missing);
  list("wrong shape", wrong);
  list("unexpected", unexpected);
  fail(file, msg);
}

class SafetensorsSource final : public WeightSource {
 public:
  SafetensorsSource(const std::string& file, const WanVaeConfig& c) : store_(file) {
    std::map<std::string, Shape> have;
    for (const std::string& n : store_.names()) {
      const auto& info = store_.info(n);
      if (info.dtype != io::DType::F32 && info.dtype != io::DType::F16 && info.dtype != io::DType::BF16)
        fail(file, "tensor " + n + " has dtype " + io::dtype_name(info.dtype) + " (F32, F16 or BF16 expected)");
      have[n] = info.shape;
    }
    check_against(expected_tensors(c), have, file, [](const std::string& n) { return n; });
  }
  std::vector<float> read(const std::string& name) const override { return store_.read_f32(name); }
  void release(const std::string& name) const override { store_.drop(name, false); }
  const std::string& path() const override { return store_.path(); }

 private:
  io::TensorStore store_;
};

class TorchSource final : public WeightSource {
 public:
  TorchSource(const std::string& file, const WanVaeConfig& c) : ckpt_(file), nrb_(c.num_res_blocks) {
    std::map<std::string, Shape> have;
    for (const std::string& n : ckpt_.names()) have[n] = ckpt_.info(n).shape;
    check_against(expected_tensors(c), have, file, [this](const std::string& n) { return original_name(n, nrb_); });
  }
  std::vector<float> read(const std::string& name) const override { return ckpt_.read_f32(original_name(name, nrb_)); }
  void release(const std::string& name) const override { ckpt_.drop(original_name(name, nrb_), false); }
  const std::string& path() const override { return ckpt_.path(); }

 private:
  io::TorchCheckpoint ckpt_;
  int nrb_;
};

// Wan2.2's structure with the widths and z_dim read off the first filters (the strict check that
// follows verifies every other tensor against them).
WanVaeConfig infer_config(const std::string& file, const std::function<const Shape*(const std::string&)>& shape_of) {
  WanVaeConfig c = wan22_config();
  const Shape* enc = shape_of("encoder.conv_in.weight");
  const Shape* dec = shape_of("decoder.conv_in.weight");
  if (!enc || !dec || enc->size() != 5 || dec->size() != 5)
    fail(file, "not a Wan VAE checkpoint (no 5-D encoder/decoder input filters)");
  for (const Shape* sh : {enc, dec})
    for (const int64_t v : *sh)
      if (v < 1 || v > 65536) fail(file, "implausible VAE filter shape " + fmt_shape(*sh));
  c.base_dim = int((*enc)[0]);
  c.z_dim = int((*dec)[1]);
  if ((*dec)[0] % c.dim_mult.back() != 0) fail(file, "decoder input filter width is not a multiple of " + std::to_string(c.dim_mult.back()));
  c.decoder_base_dim = int((*dec)[0] / c.dim_mult.back());
  if (c.z_dim != 48)
    fail(file, "z_dim " + std::to_string(c.z_dim) + ": Wan2.2's latent means/stds are known for z_dim 48 only "
               "(give a diffusers directory with its config.json instead)");
  return c;
}

}  // namespace

std::unique_ptr<WeightSource> WeightSource::open(const std::string& path, WanVaeConfig& config) {
  fs::path p(path);
  if (!fs::exists(p)) fail(path, "VAE path does not exist");
  if (fs::is_directory(p)) {
    // Files of a VAE directory follow the model-directory symlink rule (io/model_files.h).
    const std::string cfg = io::model_file(path, "config.json"), st = io::model_file(path, "diffusion_pytorch_model.safetensors");
    if (!cfg.empty() && !st.empty()) {
      config = parse_diffusers_config(cfg);
      return std::make_unique<SafetensorsSource>(st, config);
    }
    if (const std::string pth = io::model_file(path, "Wan2.2_VAE.pth"); !pth.empty()) p = pth;
    else
      fail(path, "directory holds neither a diffusers VAE (config.json + diffusion_pytorch_model.safetensors) nor Wan2.2_VAE.pth");
  }
  const std::string file = p.string();
  {
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) fail(file, "is not a regular file");
  }
  if (p.extension() == ".safetensors") {
    const std::string cfg = io::model_file(p.has_parent_path() ? p.parent_path().string() : ".", "config.json");
    if (!cfg.empty()) {
      config = parse_diffusers_config(cfg);
    } else {
      io::TensorStore probe(file);
      std::map<std::string, Shape> shapes;
      for (const auto& n : probe.names()) shapes[n] = probe.info(n).shape;
      config = infer_config(file, [&](const std::string& n) { auto it = shapes.find(n); return it == shapes.end() ? nullptr : &it->second; });
    }
    return std::make_unique<SafetensorsSource>(file, config);
  }
  // Anything else must be a torch.save archive (the reader rejects other files clearly).
  {
    io::TorchCheckpoint probe(file);
    std::map<std::string, Shape> shapes;
    for (const auto& n : probe.names()) shapes[n] = probe.info(n).shape;
    config = infer_config(file, [&](const std::string& n) {
      auto it = shapes.find(original_name(n));
      return it == shapes.end() ? nullptr : &it->second;
    });
  }
  return std::make_unique<TorchSource>(file, config);
}

}  // namespace lq::vae
