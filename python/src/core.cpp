// lance_quant._core: the Python binding of the C++ library (nanobind), over src/api/api.h.
//
// Conventions: every call that computes releases the GIL; progress callbacks re-acquire it on the
// calling thread (an exception a callback raises, e.g. KeyboardInterrupt, stops the computation and
// propagates). Arrays cross without copies: results are numpy arrays that own the C++ buffer, and the
// packed linear reads its input and writes its output in place (numpy, torch or any DLPack producer).
// lq::Error becomes lance_quant.Error carrying the C++ message unchanged.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/api.h"
#include "io/png.h"
#include "media/video_writer.h"
#include "formats/checkpoint.h"
#include "forward/quant_linear.h"
#include "forward/toy_vae.h"
#include "io/error.h"
#include "io/safetensors.h"
#include "kernels/parallel.h"
#include "kernels/q4.h"
#include "model/config.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// A numpy array that owns `v` (moved to the heap, freed with the array): no copy of the data.
template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::vector<T>&& v, std::vector<size_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(heap->data(), shape.size(), shape.data(), owner);
}

nb::object json_to_py(const nlohmann::json& j) { return nb::module_::import_("json").attr("loads")(j.dump()); }

// A Python progress callback (done, total, stage) called from C++ with the GIL re-acquired.
struct PyProgress {
  nb::object cb;
  bool active() const { return cb.is_valid() && !cb.is_none(); }
  void operator()(int64_t done, int64_t total, const std::string& stage) const {
    nb::gil_scoped_acquire gil;
    cb(done, total, stage);
  }
};

lq::fwd::WeightStorage parse_storage(const std::string& d, const char* where) {
  if (d == "f32") return lq::fwd::WeightStorage::F32;
  if (d == "bf16") return lq::fwd::WeightStorage::BF16;
  lq::fail(where, "expected f32 or bf16, got '" + d + "'");
}

std::vector<int32_t> to_ids(const nb::ndarray<const int32_t, nb::ndim<1>, nb::device::cpu>& ids) {
  std::vector<int32_t> v(ids.shape(0));
  const int64_t stride = ids.stride(0);
  for (size_t i = 0; i < v.size(); ++i) v[i] = ids.data()[int64_t(i) * stride];
  return v;
}

// ---- Model ---------------------------------------------------------------------------------------

struct Model {
  std::unique_ptr<lq::api::Model> m;
  std::string dtype, head;
  std::shared_ptr<lq::vit::Vit> own_vit;  // the checkpoint's vit_model.* ViT, loaded on first use
  const lq::model::ModelConfig& cfg() const { return m->engine.config(); }
};

// ---- the Wan2.2 VAE and the ViT ----------------------------------------------------------------

struct Vae {
  std::unique_ptr<lq::vae::WanVae> v;
};

struct Vit {
  std::shared_ptr<lq::vit::Vit> v;
  std::string path;
};

using Latents = nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu>;

// Latents [t, h, w, C] -> (vector, grid), checking the channels against `channels`.
std::vector<float> latents_in(const Latents& x, int channels, lq::fwd::LatentGrid& g, const char* where) {
  if (int(x.shape(3)) != channels)
    lq::fail(where, "latents have " + std::to_string(x.shape(3)) + " channels, expected " + std::to_string(channels));
  g = {int(x.shape(0)), int(x.shape(1)), int(x.shape(2))};
  return std::vector<float>(x.data(), x.data() + x.size());
}

nb::ndarray<nb::numpy, float> latents_out(lq::api::GenResult&& r) {
  return owned_array(std::move(r.latents), {size_t(r.grid.t), size_t(r.grid.h), size_t(r.grid.w), size_t(r.channels)});
}

// Sampler overrides shared by the generation methods.
void sampler_overrides(lq::api::T2iRequest& r, std::optional<int> steps, std::optional<double> cfg,
                       std::optional<double> shift, std::optional<double> cfg_min, std::optional<double> cfg_max) {
  r.steps = steps;
  r.cfg = cfg;
  r.shift = shift;
  r.cfg_min = cfg_min;
  r.cfg_max = cfg_max;
}

nb::dict config_dict(const lq::model::ModelConfig& c) {
  nb::dict d;
  d["source"] = c.source;
  d["hidden_size"] = c.hidden_size;
  d["intermediate_size"] = c.intermediate_size;
  d["num_layers"] = c.num_layers;
  d["num_heads"] = c.num_heads;
  d["num_kv_heads"] = c.num_kv_heads;
  d["head_dim"] = c.head_dim;
  d["vocab_size"] = c.vocab_size;
  d["max_position_embeddings"] = c.max_position_embeddings;
  d["rope_theta"] = c.rope_theta;
  d["rms_norm_eps"] = c.rms_norm_eps;
  d["mrope_section"] = std::vector<int>(c.mrope_section.begin(), c.mrope_section.end());
  d["tie_word_embeddings"] = c.tie_word_embeddings;
  d["latent_channels"] = c.latent_channels;
  d["max_latent_size"] = c.max_latent_size;
  d["max_latent_frames"] = c.max_latent_frames;
  d["len_tokenizer"] = c.len_tokenizer;
  return d;
}

Model load(const std::string& path, const std::string& dtype, const std::string& head, int num_layers) {
  lq::fwd::LoadOptions lo;
  lo.storage = parse_storage(dtype, "load dtype");
  lo.head = lq::fwd::parse_head_format(head);
  lo.num_layers = num_layers;
  Model out;
  out.dtype = dtype;
  out.head = head;
  {
    nb::gil_scoped_release release;
    out.m = std::make_unique<lq::api::Model>(lq::api::load_model(path, lo));
  }
  return out;
}

// ---- Checkpoint (read access for the torch drop-in and the exporters) ---------------------------

struct Checkpoint {
  std::string dir;
  std::unique_ptr<lq::formats::CheckpointReader> reader;  // quantized checkpoints
  std::unique_ptr<lq::io::TensorStore> store;             // dense model directories

  explicit Checkpoint(const std::string& d) : dir(d) {
    nb::gil_scoped_release release;
    if (lq::fwd::is_quantized_checkpoint(d)) reader = std::make_unique<lq::formats::CheckpointReader>(d);
    else store = std::make_unique<lq::io::TensorStore>(d);
  }
  std::string format() const { return reader ? lq::formats::format_name(reader->format()) : "dense"; }
  const lq::io::TensorInfo& info(const std::string& name) const {
    return reader ? reader->file().info(name) : store->info(name);
  }
};

nb::dict linear_decl_dict(const lq::formats::LinearDecl& d) {
  nb::dict x;
  x["name"] = d.base;
  x["scheme"] = lq::quant::scheme_name(d.scheme);
  x["out_features"] = d.out;
  x["in_features"] = d.in;
  x["group_size"] = d.group;
  x["scale_dtype"] = lq::quant::scale_dtype_name(d.scale_dtype);
  x["has_bias"] = d.has_bias;
  return x;
}

nb::dict qtensor_dict(lq::quant::QTensor&& qt) {
  nb::dict x;
  const size_t out = size_t(qt.out), in = size_t(qt.in);
  x["scheme"] = lq::quant::scheme_name(qt.scheme);
  x["out_features"] = qt.out;
  x["in_features"] = qt.in;
  x["group_size"] = qt.group;
  x["codes"] = owned_array(std::move(qt.codes), {out, in});
  if (lq::quant::scheme_is_integer(qt.scheme)) {
    const size_t g = size_t(qt.groups_per_row());
    x["scale_dtype"] = lq::quant::scale_dtype_name(qt.scale_dtype);
    x["scales"] = owned_array(std::move(qt.scales), {out, g});
    x["zeros"] = owned_array(std::move(qt.zeros), {out, g});
  } else {
    x["block_scales"] = owned_array(std::move(qt.block_scales), {out, in / 16});
    x["tensor_scale"] = qt.tensor_scale;
  }
  return x;
}

// ---- PackedLinear: one quantized linear in the fused kernels' layout ----------------------------

struct PackedLinear {
  std::unique_ptr<lq::fwd::LinearWeights> w;
  std::string name, scheme;
  int64_t group = 0;
  bool has_bias = false;

  using Array2 = nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
  using ConstArray2 = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

  void apply(const ConstArray2& x, Array2 y) const {
    const int64_t n = int64_t(x.shape(0));
    if (int64_t(x.shape(1)) != w->in_features())
      lq::fail(name, "input has " + std::to_string(x.shape(1)) + " features, the linear takes " +
                         std::to_string(w->in_features()));
    if (int64_t(y.shape(0)) != n || int64_t(y.shape(1)) != w->out_features())
      lq::fail(name, "output must be [" + std::to_string(n) + ", " + std::to_string(w->out_features()) + "]");
    const float* xp = x.data();
    float* yp = y.data();
    const auto xb = reinterpret_cast<uintptr_t>(xp), yb = reinterpret_cast<uintptr_t>(yp);
    if (xb < yb + y.nbytes() && yb < xb + x.nbytes()) lq::fail(name, "input and output overlap");
    nb::gil_scoped_release release;
    w->apply(xp, n, yp);
  }
};

PackedLinear make_packed(lq::quant::QTensor&& qt, std::vector<float> bias, const std::string& name) {
  PackedLinear p;
  p.name = name;
  p.scheme = lq::quant::scheme_name(qt.scheme);
  p.group = qt.group;
  p.has_bias = !bias.empty();
  nb::gil_scoped_release release;
  p.w = lq::fwd::make_quant_linear(qt, std::move(bias), name);
  return p;
}

// The narrowest scale dtype that holds every scale exactly (bf16, f16, else f32).
lq::quant::ScaleDType exact_scale_dtype(const std::vector<float>& s) {
  for (auto d : {lq::quant::ScaleDType::BF16, lq::quant::ScaleDType::F16}) {
    bool ok = true;
    for (float v : s)
      if (lq::quant::round_to_scale_dtype(v, d) != v) {
        ok = false;
        break;
      }
    if (ok) return d;
  }
  return lq::quant::ScaleDType::F32;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "Native core of lance_quant (C++ library binding). Use the lance_quant package's functions.";
  nb::exception<lq::Error>(m, "Error", PyExc_RuntimeError);

  m.def("set_num_threads", &lq::kernels::set_num_threads, "n"_a,
        "Threads used by every kernel (n <= 0: the machine's cores). Results do not depend on it.");
  m.def("num_threads", &lq::kernels::num_threads, "Threads used by every kernel.");
  m.def("kernel_path", []() { return std::string(lq::kernels::q4_simd_path()); },
        "The SIMD path the fused 4-bit kernels run on: 'avx512vnni', 'avx2' or 'scalar'.");
  m.def(
      "model_config",
      [](const std::string& dir) {
        lq::model::ModelConfig c;
        {
          nb::gil_scoped_release release;
          c = lq::model::load_config(dir);
        }
        return config_dict(c);
      },
      "model_dir"_a, "The configuration of a model directory (llm_config.json / config.json, lance_config.json).");

  m.def(
      "t2i_settings",
      [](const std::string& dir) {
        const lq::fwd::T2iSettings s = lq::fwd::load_t2i_settings(dir);
        nb::dict d;
        d["instruction"] = s.instruction;
        d["grid_thw"] = std::vector<int>{s.grid.t, s.grid.h, s.grid.w};
        d["grid_from_config"] = s.grid_from_config;
        d["steps"] = s.sampler.steps;
        d["shift"] = s.sampler.shift;
        d["cfg"] = s.sampler.cfg_scale;
        d["cfg_interval"] = std::vector<double>{s.sampler.cfg_min, s.sampler.cfg_max};
        if (s.has_toy_vae) {
          nb::dict t;
          t["patch"] = s.toy_patch;
          t["mean"] = s.toy_mean;
          t["std"] = s.toy_std;
          d["toy_vae"] = t;
        } else {
          d["toy_vae"] = nb::none();
        }
        return d;
      },
      "model_dir"_a,
      "Text-to-image settings of a model directory (lance_config.json, else Lance_3B's defaults): instruction,\n"
      "grid_thw, steps, shift, cfg, cfg_interval, and toy_vae (lance-mini's patch decoder) or None.");
  m.def(
      "toy_vae_decode",
      [](nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu> latents, int patch, double mean,
         double std) {
        const size_t t = latents.shape(0), h = latents.shape(1), w = latents.shape(2), c = latents.shape(3);
        if (t != 1) lq::fail("toy_vae_decode", "the toy VAE decodes single images (t = 1), got t = " + std::to_string(t));
        if (size_t(patch) * size_t(patch) * 3 != c)
          lq::fail("toy_vae_decode", "patch " + std::to_string(patch) + " does not match " + std::to_string(c) + " channels");
        const lq::fwd::LatentGrid g{1, int(h), int(w)};
        std::vector<float> px = lq::fwd::toy_vae_decode(latents.data(), g, lq::fwd::ToyVae{patch, mean, std});
        return owned_array(std::move(px), {h * size_t(patch), w * size_t(patch), 3});
      },
      "latents"_a, "patch"_a, "mean"_a, "std"_a,
      "lance-mini's toy VAE decode (as `run --png`): latents [1, h, w, patch*patch*3] -> pixels [h*patch, w*patch, 3]\n"
      "in 0..1, pixel = clamp(latent * std + mean, 0, 1).");

  // ---- Model ----
  nb::class_<Model>(m, "Model", "A Lance model loaded by the native engine (dense or quantized checkpoint).")
      .def_prop_ro("path", [](const Model& x) { return x.m->dir; }, "The model directory.")
      .def_prop_ro("dtype", [](const Model& x) { return x.dtype; }, "Weight storage of dense tensors: 'f32' or 'bf16'.")
      .def_prop_ro("head", [](const Model& x) { return x.head; }, "How the lm_head runs: 'stored' or 'int4'.")
      .def_prop_ro("config", [](const Model& x) { return config_dict(x.cfg()); }, "Model configuration (a dict).")
      .def_prop_ro("num_layers", [](const Model& x) { return x.m->engine.num_layers(); }, "Decoder layers loaded.")
      .def_prop_ro("vocab_size", [](const Model& x) { return x.cfg().vocab_size; }, "Rows of the embedding / lm_head.")
      .def_prop_ro("latent_channels", [](const Model& x) { return x.cfg().latent_channels; },
                   "Channels of a latent token (48: Wan 2.2 VAE).")
      .def(
          "tokenize", [](const Model& x, const std::string& text) { return x.m->tokenizer.encode(text); }, "text"_a,
          "Token ids of `text` (Qwen2 byte-level BPE; special tokens recognised; no BOS).")
      .def(
          "prompt_ids",
          [](const Model& x, const std::string& prompt, bool raw) { return lq::api::prompt_ids(*x.m, prompt, raw); },
          "prompt"_a, "raw"_a = false,
          "The token ids `generate` feeds for `prompt`: the Qwen chat template around it unless raw.")
      .def(
          "detokenize",
          [](const Model& x, const std::vector<int32_t>& ids, bool skip_special) {
            return x.m->tokenizer.decode(ids, skip_special);
          },
          "ids"_a, "skip_special_tokens"_a = false, "Text of token ids.")
      .def(
          "token_id", [](const Model& x, const std::string& token) { return x.m->tokenizer.token_id(token); }, "token"_a,
          "The id of a vocabulary or added token, or None.")
      .def(
          "generate",
          [](const Model& x, const std::string& prompt, int max_new_tokens, bool raw) {
            lq::api::TextRequest r;
            r.prompt = prompt;
            r.max_new_tokens = max_new_tokens;
            r.raw = raw;
            lq::api::TextResult res;
            {
              nb::gil_scoped_release release;
              res = lq::api::generate(*x.m, r);
            }
            return json_to_py(res.to_json());
          },
          "prompt"_a, "max_new_tokens"_a = 256, "raw"_a = false,
          "Greedy answer to `prompt` (chat template unless raw; KV cache; stops at <|im_end|>).\n"
          "Returns the dict `lance-quant run --task text --json` prints: text, generated_ids, prompt_tokens, seconds.")
      .def(
          "logits",
          [](const Model& x, nb::ndarray<const int32_t, nb::ndim<1>, nb::device::cpu> ids) {
            std::vector<int32_t> v = to_ids(ids);
            std::vector<float> lg;
            {
              nb::gil_scoped_release release;
              lg = lq::api::logits(*x.m, v);
            }
            return owned_array(std::move(lg), {v.size(), size_t(x.cfg().vocab_size)});
          },
          "ids"_a,
          "Logits [n, vocab_size] (float32) of token ids at positions 0..n-1 (one causal sequence, no cache).")
      .def(
          "text_to_image",
          [](const Model& x, const std::string& prompt, uint64_t seed, std::optional<int> steps, std::optional<double> cfg,
             int height, int width, std::optional<double> shift, std::optional<double> cfg_min,
             std::optional<double> cfg_max, nb::object progress) {
            lq::api::T2iRequest r;
            r.prompt = prompt;
            r.seed = seed;
            r.steps = steps;
            r.cfg = cfg;
            r.height = height;
            r.width = width;
            r.shift = shift;
            r.cfg_min = cfg_min;
            r.cfg_max = cfg_max;
            PyProgress p{progress};
            if (p.active()) r.on_step = [&p](int step, int total) { p(step, total, "t2i"); };
            lq::api::T2iResult res;
            {
              nb::gil_scoped_release release;
              res = lq::api::text_to_image(*x.m, r);
            }
            return owned_array(std::move(res.latents),
                               {size_t(res.grid.t), size_t(res.grid.h), size_t(res.grid.w), size_t(res.channels)});
          },
          "prompt"_a, "seed"_a, "steps"_a = nb::none(), "cfg"_a = nb::none(), "height"_a = 0, "width"_a = 0,
          "shift"_a = nb::none(), "cfg_min"_a = nb::none(), "cfg_max"_a = nb::none(), "progress"_a = nb::none(),
          "Final latents [t, h, w, C] (float32, Lance's normalised latent space, channels last) of the rectified-flow\n"
          "CFG sampler for `prompt` from noise seed `seed`, as `lance-quant run --task t2i` writes them.\n"
          "height/width in pixels (multiples of 16; 0: the model's t2i_latent_grid_thw); unset steps/cfg/shift/cfg_min/\n"
          "cfg_max take lance_config.json's values. progress(step, steps, 't2i') is called before each step.")
      .def(
          "text_to_video",
          [](const Model& x, const std::string& prompt, uint64_t seed, int frames, std::optional<int> steps,
             std::optional<double> cfg, int height, int width, std::optional<double> shift, std::optional<double> cfg_min,
             std::optional<double> cfg_max, nb::object progress) {
            lq::api::GenRequest r;
            r.task = "t2v";
            r.prompt = prompt;
            r.seed = seed;
            r.frames = frames;
            r.height = height;
            r.width = width;
            sampler_overrides(r, steps, cfg, shift, cfg_min, cfg_max);
            PyProgress p{progress};
            if (p.active()) r.on_step = [&p](int step, int total) { p(step, total, "t2v"); };
            lq::api::GenResult res;
            {
              nb::gil_scoped_release release;
              res = lq::api::generate_latents(*x.m, r);
            }
            return latents_out(std::move(res));
          },
          "prompt"_a, "seed"_a, "frames"_a, "steps"_a = nb::none(), "cfg"_a = nb::none(), "height"_a = 0, "width"_a = 0,
          "shift"_a = nb::none(), "cfg_min"_a = nb::none(), "cfg_max"_a = nb::none(), "progress"_a = nb::none(),
          "Text-to-video (`run --task t2v`): final latents [t, h, w, C] for `frames` pixel frames (Lance: 4k + 1;\n"
          "t = (frames - 1) / 4 + 1), Lance's t2v instruction, on the t2i grid unless height/width are given.\n"
          "Decode them with Vae.decode / Vae.write (MP4). progress(step, steps, 't2v') before each step.")
      .def(
          "_edit",
          [](const Model& x, const std::string& prompt, uint64_t seed, const Vae& vae, const std::string& image,
             const std::string& video, int resolution, int max_frames, double fps, std::optional<int> steps, std::optional<double> cfg,
             std::optional<double> shift, std::optional<double> cfg_min, std::optional<double> cfg_max,
             nb::object progress, const std::string& vit_dir, int vit_resolution, bool no_vit_reference) {
            lq::api::GenRequest r;
            r.task = "edit";
            r.vit_dir = vit_dir;
            r.vit_resolution = vit_resolution;
            r.no_vit_reference = no_vit_reference;
            r.prompt = prompt;
            r.seed = seed;
            r.edit.image = image;
            r.edit.video = video;
            r.edit.resolution = resolution;
            r.edit.max_frames = max_frames;
            if (!(fps > 0)) lq::fail("--fps", "must be positive");
            r.edit.folder_fps = fps;
            sampler_overrides(r, steps, cfg, shift, cfg_min, cfg_max);
            PyProgress p{progress};
            if (p.active()) r.on_step = [&p](int step, int total) { p(step, total, "edit"); };
            lq::api::GenResult res;
            {
              nb::gil_scoped_release release;
              res = lq::api::generate_latents(*x.m, r, vae.v.get());
            }
            nb::object info = json_to_py(res.edit);
            return nb::make_tuple(latents_out(std::move(res)), info);
          },
          "prompt"_a, "seed"_a, "vae"_a, "image"_a = "", "video"_a = "", "resolution"_a = 0, "max_frames"_a = 0,
          "fps"_a = 24.0, "steps"_a = nb::none(), "cfg"_a = nb::none(), "shift"_a = nb::none(), "cfg_min"_a = nb::none(),
          "cfg_max"_a = nb::none(), "progress"_a = nb::none(), "vit_dir"_a = "", "vit_resolution"_a = 0,
          "no_vit_reference"_a = false,
          "Image / video edit from files (see Model.edit): (latents [t, h, w, C], info dict).")
      .def(
          "_understand",
          [](Model& x, const std::string& question, const std::string& image, const std::string& video,
             std::optional<Vit> vit, const std::string& system, int resolution, double fps, int max_new_tokens) {
            lq::api::X2tRequest r;
            r.image = image;
            r.video = video;
            r.prompt = question;
            r.system = system;
            r.resolution = resolution;
            r.fps = fps;
            r.max_new_tokens = max_new_tokens;
            std::shared_ptr<lq::vit::Vit> v = vit ? vit->v : x.own_vit;
            lq::api::X2tResult res;
            {
              nb::gil_scoped_release release;
              if (!v) {
                v = std::make_shared<lq::vit::Vit>(lq::api::load_vit(x.m->dir, "", lq::fwd::WeightStorage::F32));
                x.own_vit = v;
              }
              res = lq::api::understand(*x.m, *v, r);
            }
            return json_to_py(res.to_json());
          },
          "question"_a, "image"_a = "", "video"_a = "", "vit"_a = nb::none(), "system"_a = "", "resolution"_a = 0,
          "fps"_a = 24.0, "max_new_tokens"_a = 256,
          "Understanding from files (see Model.understand): the dict `run --task x2t --json` prints.");

  nb::class_<Vae>(m, "Vae", "The Wan2.2 VAE (native): latents <-> pictures and videos.")
      .def_prop_ro("path", [](const Vae& x) { return x.v->source(); }, "Where the weights were read from.")
      .def_prop_ro("z_dim", [](const Vae& x) { return x.v->config().z_dim; }, "Latent channels (48).")
      .def_prop_ro("spatial_ratio", [](const Vae& x) { return x.v->config().spatial_ratio(); }, "Pixels per latent (16).")
      .def_prop_ro("temporal_ratio", [](const Vae& x) { return x.v->config().temporal_ratio(); },
                   "Frames per latent frame after the first (4).")
      .def(
          "decode",
          [](const Vae& x, Latents latents, nb::object progress) {
            lq::fwd::LatentGrid g;
            std::vector<float> z = latents_in(latents, x.v->config().z_dim, g, "Vae.decode");
            PyProgress p{progress};
            std::function<void(int, int)> cb;
            if (p.active()) cb = [&p](int done, int total) { p(done, total, "vae"); };
            lq::api::Frames f;
            {
              nb::gil_scoped_release release;
              f = lq::api::decode_rgb8(*x.v, z, g, cb);
            }
            return owned_array(std::move(f.rgb), {size_t(f.frames), size_t(f.height), size_t(f.width), 3});
          },
          "latents"_a, "progress"_a = nb::none(),
          "Normalised latents [t, h, w, C] (what the samplers return) -> uint8 frames [4 (t - 1) + 1, 16 h, 16 w, 3]\n"
          "exactly as `run --png/--mp4` writes them (clamped to [-1, 1], x * 127.5 + 127.5 rounded half to even).\n"
          "progress(done, total, 'vae') after each time chunk.")
      .def(
          "write",
          [](const Vae& x, Latents latents, const std::string& png, const std::string& mp4, const std::string& frames_dir,
             int fps, nb::object progress) {
            lq::fwd::LatentGrid g;
            std::vector<float> z = latents_in(latents, x.v->config().z_dim, g, "Vae.write");
            lq::api::VisualOutputs o;
            o.png = png;
            o.mp4 = mp4;
            o.frames_dir = frames_dir;
            if (fps < 1) lq::fail("--fps", "the frame rate of written videos: an integer >= 1");
            o.fps = fps;
            if (!o.any()) lq::fail("Vae.write", "nothing to write: give png, mp4 and/or frames_dir");
            lq::api::check_visual_outputs(o, "", {x.v->source()});  // io/output.h rules, before decoding
            PyProgress p{progress};
            std::function<void(int, int)> cb;
            if (p.active()) cb = [&p](int done, int total) { p(done, total, "vae"); };
            nlohmann::json j;
            {
              nb::gil_scoped_release release;
              j = lq::api::write_visuals(*x.v, z, g, o, cb);
            }
            return json_to_py(j);
          },
          "latents"_a, "png"_a = "", "mp4"_a = "", "frames_dir"_a = "", "fps"_a = 12, "progress"_a = nb::none(),
          "Decodes and writes a PNG (the first frame), an H.264 MP4 at `fps` and/or every frame as PNG into\n"
          "frames_dir, as `run --png/--mp4/--frames-dir` do; returns the summary dict (`decoded` of run --json).");
  m.def(
      "_load_vae",
      [](const std::string& path, const std::string& conv) {
        Vae out;
        const lq::kernels::ConvBackend b = lq::kernels::parse_conv_backend(conv.c_str());
        nb::gil_scoped_release release;
        out.v = std::make_unique<lq::vae::WanVae>(lq::api::load_vae(path, b));
        return out;
      },
      "path"_a, "conv"_a = "auto", "Loads the Wan2.2 VAE (see lance_quant.load_vae).");

  nb::class_<Vit>(m, "Vit", "Lance's vision tower (Qwen2.5-VL ViT), native.")
      .def_prop_ro("path", [](const Vit& x) { return x.path; })
      .def_prop_ro("out_hidden", [](const Vit& x) { return x.v->config().out_hidden_size; },
                   "Width of the tokens it hands the backbone (the model's hidden size).");
  m.def(
      "_load_vit",
      [](const std::string& path, const std::string& dtype) {
        Vit out;
        out.path = path;
        lq::vit::VitLoadOptions vo;
        vo.storage = parse_storage(dtype, "load_vit dtype");
        nb::gil_scoped_release release;
        out.v = std::make_shared<lq::vit::Vit>(lq::vit::Vit::load(path, vo));
        return out;
      },
      "path"_a, "dtype"_a = "f32", "Loads a ViT (see lance_quant.load_vit).");

  m.def(
      "write_png",
      [](nb::ndarray<const uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu> rgb, const std::string& path) {
        if (rgb.shape(2) != 3) lq::fail(path, "write_png takes uint8 [H, W, 3]");
        nb::gil_scoped_release release;
        lq::io::write_png_rgb(path, rgb.data(), int(rgb.shape(1)), int(rgb.shape(0)));
      },
      "rgb"_a, "path"_a, "Writes uint8 [H, W, 3] as an 8-bit RGB PNG.");
  m.def(
      "write_mp4",
      [](nb::ndarray<const uint8_t, nb::ndim<4>, nb::c_contig, nb::device::cpu> frames, const std::string& path, int fps) {
        if (frames.shape(3) != 3 || frames.shape(0) < 1) lq::fail(path, "write_mp4 takes uint8 frames [T >= 1, H, W, 3]");
        if (fps < 1) lq::fail("--fps", "the frame rate of written videos: an integer >= 1");
        const int h = int(frames.shape(1)), w = int(frames.shape(2));
        std::string codec;
        {
          nb::gil_scoped_release release;
          lq::media::VideoWriter vw(path, w, h, lq::media::VideoWriterOptions{fps});
          for (size_t t = 0; t < frames.shape(0); ++t) vw.add_frame(frames.data() + t * size_t(h) * w * 3);
          vw.finish();
          codec = vw.codec();
        }
        nb::dict d;
        d["mp4"] = path;
        d["frames"] = frames.shape(0);
        d["fps"] = fps;
        d["codec"] = codec;
        return d;
      },
      "frames"_a, "path"_a, "fps"_a = 12,
      "Writes uint8 frames [T, H, W, 3] (H, W even) as an H.264 MP4 (the writer `run --mp4` uses); returns a summary.");

  m.def("_load", &load, "path"_a, "dtype"_a = "f32", "head"_a = "stored", "num_layers"_a = -1,
        "Loads a model directory (see lance_quant.load).");

  // ---- calibrate / quantize / evaluate ----
  m.def(
      "calibrate",
      [](const std::string& model, const std::vector<std::string>& calib, const std::string& out, int64_t max_tokens,
         int64_t max_prompts, int64_t seq_len, int shard_index, int shard_count, bool hessian, int steps, uint64_t seed,
         const std::string& dtype, bool stream_weights, bool allow_partial, bool force, const std::string& vae,
         int t2v_frames, int edit_resolution, int edit_max_frames, const std::string& vit, int x2t_resolution,
         nb::object progress) {
        lq::api::CalibrateRequest r;
        r.options.vae = vae;
        r.options.t2v_frames = t2v_frames;
        r.options.edit_resolution = edit_resolution;
        r.options.edit_max_frames = edit_max_frames;
        r.vit_dir = vit;
        r.x2t_resolution = x2t_resolution;
        r.model_dir = model;
        r.out = out;
        for (const auto& s : calib) r.sources.push_back(lq::calib::parse_source(s));
        r.options.max_tokens = max_tokens;
        r.options.max_prompts = max_prompts;
        r.options.seq_len = seq_len;
        if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count)
          lq::fail("--shard " + std::to_string(shard_index) + "/" + std::to_string(shard_count),
                   "expected I/N with 0 <= I < N");
        r.options.shard_index = shard_index;
        r.options.shard_count = shard_count;
        r.options.hessian = hessian;
        r.options.seed = seed;
        r.steps = steps;
        r.load.storage = parse_storage(dtype, "--dtype");
        r.load.release_layer_pages = stream_weights;
        r.allow_partial = allow_partial;
        r.force = force;
        PyProgress p{progress};
        std::function<void(int64_t, int64_t)> cb;
        if (p.active()) cb = [&p](int64_t done, int64_t total) { p(done, total, "calibrate"); };
        lq::api::CalibrateResult res;
        {
          nb::gil_scoped_release release;
          res = lq::api::calibrate(r, cb);
        }
        return json_to_py(res.to_json());
      },
      "model"_a, "calib"_a, "out"_a, nb::kw_only(), "max_tokens"_a = 0, "max_prompts"_a = 0, "seq_len"_a = 512,
      "shard_index"_a = 0, "shard_count"_a = 1, "hessian"_a = false, "steps"_a = -1, "seed"_a = 0, "dtype"_a = "f32",
      "stream_weights"_a = false, "allow_partial"_a = false, "force"_a = false, "vae"_a = "", "t2v_frames"_a = 0,
      "edit_resolution"_a = 0, "edit_max_frames"_a = 17, "vit"_a = "", "x2t_resolution"_a = 0, "progress"_a = nb::none(),
      "Activation statistics of both paths (`lance-quant calibrate`): `calib` holds KIND:FILE sources, KIND one of\n"
      "text, chat, t2i, t2v, image_edit, video_edit (need `vae`), x2t_image, x2t_video (need the ViT: `vit` DIR or\n"
      "the checkpoint's vit_model.*). Writes `out` and returns the dict `calibrate --json` prints.\n"
      "progress(done, total, 'calibrate') is called after each sample.");

  m.def(
      "quantize",
      [](const std::string& model, const std::string& out, const std::string& scheme, std::optional<int64_t> group_size, bool sym,
         const std::vector<std::string>& calib, const std::string& stats, bool allow_partial, const std::string& format,
         const std::vector<std::string>& keep, const std::string& gen_scheme, const std::vector<std::string>& overrides,
         const std::string& keep_dtype, bool force, int64_t awq_rows, int64_t clip_rows, bool clip, int64_t seq_len,
         int64_t max_tokens, int64_t max_prompts, int t2i_taus, int steps, const std::string& dense_out,
         const std::string& vit_dir, int x2t_resolution, double bpw, bool sequential, bool act_order,
         int64_t gptq_block, double gptq_damp, bool gptq_awq_clip, bool vit, nb::object progress) {
        lq::pipeline::QuantizeOptions o;
        o.quantize_vit = vit;
        o.bpw = bpw;
        o.sequential = sequential;
        o.gptq.gptq.act_order = act_order;
        o.gptq.gptq.block = gptq_block;
        o.gptq.gptq.damp = gptq_damp;
        o.gptq.awq_clip = gptq_awq_clip;
        o.vit_dir = vit_dir;
        if (x2t_resolution) {
          if (x2t_resolution < 28) lq::fail("quantize --x2t-resolution", "must be at least 28 pixels");
          o.x2t.image_resolution = o.x2t.video_resolution = x2t_resolution;
        }
        o.model_dir = model;
        o.out_dir = out;
        for (const auto& s : calib) o.calib.push_back(lq::calib::parse_source(s));
        o.stats_path = stats;
        o.allow_partial = allow_partial;
        o.format = lq::formats::parse_format(format, "--format");
        o.keep = keep;
        if (keep_dtype != "bf16" && keep_dtype != "f32") lq::fail("--keep-dtype " + keep_dtype, "expected bf16 or f32");
        o.kept_dtype = keep_dtype == "f32" ? lq::io::DType::F32 : lq::io::DType::BF16;
        o.force = force;
        o.awq.rows_per_layer = awq_rows;
        o.awq.clip_rows = clip_rows;
        o.awq.clip = clip;
        o.awq.seq_len = seq_len;
        o.awq.max_tokens = max_tokens;
        o.awq.max_prompts = max_prompts;
        o.awq.t2i_taus = t2i_taus;
        o.awq.t2i_steps = steps;
        o.dense_out = dense_out;
        o = lq::api::quantize_options(std::move(o), scheme, group_size, sym, gen_scheme, overrides);
        PyProgress p{progress};
        if (p.active()) o.on_layer = [&p](int done, int total) { p(done, total, "quantize"); };
        lq::pipeline::QuantizeReport rep;
        {
          nb::gil_scoped_release release;
          rep = lq::api::quantize(o);
        }
        return json_to_py(rep.to_json());
      },
      "model"_a, "out"_a, nb::kw_only(), "scheme"_a = "awq-int4", "group_size"_a = nb::none(), "sym"_a = false,
      "calib"_a = std::vector<std::string>{}, "stats"_a = "", "allow_partial"_a = false, "format"_a = "lance-quant-v1",
      "keep"_a = std::vector<std::string>{}, "gen_scheme"_a = "", "overrides"_a = std::vector<std::string>{},
      "keep_dtype"_a = "bf16", "force"_a = false, "awq_rows"_a = 2048, "clip_rows"_a = 256, "clip"_a = true,
      "seq_len"_a = 256, "max_tokens"_a = 0, "max_prompts"_a = 0, "t2i_taus"_a = 4, "steps"_a = 0, "dense_out"_a = "",
      "vit_dir"_a = "", "x2t_resolution"_a = 0, "bpw"_a = 0.0, "sequential"_a = true, "act_order"_a = true,
      "gptq_block"_a = 128, "gptq_damp"_a = 0.01, "gptq_awq_clip"_a = false, "vit"_a = false, "progress"_a = nb::none(),
      "Quantizes a checkpoint layer by layer (`lance-quant quantize`) into `out` and returns the dict\n"
      "`quantize --json` prints (group_size None: 128, or NVFP4's fixed blocks). Options mirror the CLI flags (--scheme incl. gptq-int4 / awq-gptq-int4 /\n"
      "gptq-nvfp4 / awq-gptq-nvfp4, --group-size, --calib, --format, --bpw (mixed precision under a budget; the\n"
      "plan is in the result's 'bit_plan'), sequential=False for --no-sequential, act_order, gptq_block, vit=True for\n"
      "--vit (the ViT of vit_dir or the model's vit_model.* written 4-bit; the result's 'vit' says how), ...).\n"
      "progress(layer, layers, 'quantize') is called after each layer.");

  m.def(
      "evaluate",
      [](const std::string& base, const std::string& quant, const std::string& out, const std::vector<std::string>& text,
         const std::string& chat, const std::string& t2i_prompts, bool no_text, bool no_chat, bool no_t2i,
         const std::string& data_dir, int64_t max_text_tokens, int max_chat, int max_new_tokens, int max_t2i,
         std::optional<int> steps, int64_t window, uint64_t seed, const std::string& fake_quant,
         const std::string& dtype, const std::string& head, const std::string& vae, const std::string& x2t_image,
         const std::string& x2t_video, const std::string& vit, const std::string& vit_quant, int x2t_resolution,
         int max_x2t, bool force, nb::object progress) {
        lq::api::EvalRequest r;
        r.force = force;
        r.vae = vae;
        r.x2t_image = x2t_image;
        r.x2t_video = x2t_video;
        r.vit = vit;
        r.vit_quant = vit_quant;
        if (x2t_resolution < 0 || max_x2t < 0) lq::fail("eval", "x2t_resolution and max_x2t must be >= 0");
        r.x2t_resolution = x2t_resolution;
        r.max_x2t = max_x2t;
        r.base = base;
        r.quant = quant;
        r.out = out;
        r.data.text_files = text;
        r.data.chat_file = chat;
        r.data.t2i_file = t2i_prompts;
        r.no_text = no_text;
        r.no_chat = no_chat;
        r.no_t2i = no_t2i;
        r.data_dir = data_dir;
        auto positive = [](int64_t v, const char* flag) {
          if (v < 1) lq::fail(std::string("eval ") + flag, "must be >= 1");
          return v;
        };
        if (max_text_tokens != 0) r.options.max_text_tokens = positive(max_text_tokens, "--max-text-tokens");
        r.options.max_chat = int(positive(max_chat, "--max-chat"));
        r.options.max_new_tokens = int(positive(max_new_tokens, "--max-new-tokens"));
        r.options.max_t2i = int(positive(max_t2i, "--max-t2i"));
        if (steps) r.steps = int(positive(*steps, "--steps"));
        r.options.window = positive(window, "--window");
        r.options.seed = seed;
        r.fake_quant = fake_quant;
        r.storage = parse_storage(dtype, "eval --dtype");
        r.quant_head = lq::fwd::parse_head_format(head);
        PyProgress p{progress};
        if (p.active())
          r.options.progress = [&p](int64_t done, int64_t total, const std::string& stage) { p(done, total, stage); };
        lq::api::EvalOutcome res;
        {
          nb::gil_scoped_release release;
          res = lq::api::evaluate(r);
        }
        return json_to_py(res.report);
      },
      "base"_a, "quant"_a, "out"_a, nb::kw_only(), "text"_a = std::vector<std::string>{}, "chat"_a = "",
      "t2i_prompts"_a = "", "no_text"_a = false, "no_chat"_a = false, "no_t2i"_a = false, "data_dir"_a = "",
      "max_text_tokens"_a = 0, "max_chat"_a = 16, "max_new_tokens"_a = 48, "max_t2i"_a = 8, "steps"_a = nb::none(),
      "window"_a = 256, "seed"_a = 0, "fake_quant"_a = "", "dtype"_a = "f32", "head"_a = "stored",
      "vae"_a = "", "x2t_image"_a = "", "x2t_video"_a = "", "vit"_a = "", "vit_quant"_a = "", "x2t_resolution"_a = 0,
      "max_x2t"_a = 0, "force"_a = false, "progress"_a = nb::none(),
      "Compares QUANT with BASE (`lance-quant eval`): writes the report directory `out` and returns its\n"
      "report.json document. progress(done, total, stage) is called after each unit of work.");

  // ---- Checkpoint ----
  nb::class_<Checkpoint>(m, "Checkpoint",
                         "Read access to a checkpoint directory: a quantized one (lance-quant-v1, autoawq,\n"
                         "compressed-tensors, modelopt) or a dense model directory (safetensors).")
      .def(nb::init<const std::string&>(), "dir"_a)
      .def_prop_ro("path", [](const Checkpoint& c) { return c.dir; })
      .def_prop_ro("format", &Checkpoint::format, "'lance-quant-v1', 'autoawq', 'compressed-tensors', 'modelopt' or 'dense'.")
      .def(
          "quantized_linears",
          [](const Checkpoint& c) {
            nb::list l;
            if (c.reader)
              for (const auto& d : c.reader->quantized_linears()) l.append(linear_decl_dict(d));
            return l;
          },
          "Quantized linears in file order: dicts with name (checkpoint module name, without '.weight'), scheme,\n"
          "out_features, in_features, group_size, scale_dtype, has_bias.")
      .def(
          "tensor_names",
          [](const Checkpoint& c) { return c.reader ? c.reader->plain_names() : c.store->names(); },
          "Names of the tensors outside quantized linears (every tensor of a dense directory).")
      .def(
          "shape", [](const Checkpoint& c, const std::string& name) { return c.info(name).shape; }, "name"_a,
          "Shape of a tensor listed by tensor_names().")
      .def(
          "read",
          [](const Checkpoint& c, const std::string& name) {
            const auto& info = c.info(name);
            std::vector<size_t> shape(info.shape.begin(), info.shape.end());
            std::vector<float> v;
            {
              nb::gil_scoped_release release;
              v = c.reader ? c.reader->read_plain(name) : c.store->read_f32(name);
            }
            return owned_array(std::move(v), shape);
          },
          "name"_a, "A tensor listed by tensor_names() as float32 (converted from its stored dtype).")
      .def(
          "read_quantized",
          [](const Checkpoint& c, const std::string& name) {
            if (!c.reader || !c.reader->is_quantized(name)) lq::fail(c.dir, "'" + name + "' is not a quantized linear");
            lq::quant::QTensor qt;
            {
              nb::gil_scoped_release release;
              qt = c.reader->read_quantized(name);
            }
            return qtensor_dict(std::move(qt));
          },
          "name"_a,
          "The canonical quantized form of a linear: codes [out, in] (uint8, unpacked), and scales / zeros\n"
          "[out, in/group] (integer schemes: w = (code - zero) * scale) or block_scales (E4M3 bytes) and\n"
          "tensor_scale (NVFP4).")
      .def(
          "dequantize",
          [](const Checkpoint& c, const std::string& name) {
            if (!c.reader || !c.reader->is_quantized(name)) lq::fail(c.dir, "'" + name + "' is not a quantized linear");
            std::vector<float> w;
            int64_t out = 0, in = 0;
            {
              nb::gil_scoped_release release;
              const lq::quant::QTensor qt = c.reader->read_quantized(name);
              out = qt.out;
              in = qt.in;
              w = qt.dequantize();
            }
            return owned_array(std::move(w), {size_t(out), size_t(in)});
          },
          "name"_a, "The dequantized weight [out, in] (float32), exactly as the engine's reference computes it.")
      .def(
          "read_bias",
          [](const Checkpoint& c, const std::string& name) -> nb::object {
            std::optional<std::vector<float>> b;
            if (c.reader) b = c.reader->read_bias(name);
            else if (c.store->has(name + ".bias")) b = c.store->read_f32(name + ".bias");
            if (!b) return nb::none();
            const size_t n = b->size();
            return nb::cast(owned_array(std::move(*b), {n}));
          },
          "name"_a, "The bias of a linear (float32), or None.")
      .def(
          "packed_linear",
          [](const Checkpoint& c, const std::string& name) {
            if (!c.reader || !c.reader->is_quantized(name)) lq::fail(c.dir, "'" + name + "' is not a quantized linear");
            lq::quant::QTensor qt;
            std::optional<std::vector<float>> bias;
            {
              nb::gil_scoped_release release;
              qt = c.reader->read_quantized(name);
              bias = c.reader->read_bias(name);
            }
            return make_packed(std::move(qt), bias ? std::move(*bias) : std::vector<float>{}, name);
          },
          "name"_a, "The quantized linear `name` (with its stored bias) packed for the fused kernels.");

  // ---- PackedLinear ----
  nb::class_<PackedLinear>(m, "PackedLinear",
                           "A quantized linear in the fused 4-bit kernels' layout (INT4 / NVFP4; INT8 runs as bf16).\n"
                           "y = x W^T + b with W decoded inside the dot products, never materialised.")
      .def_prop_ro("in_features", [](const PackedLinear& p) { return p.w->in_features(); })
      .def_prop_ro("out_features", [](const PackedLinear& p) { return p.w->out_features(); })
      .def_prop_ro("name", [](const PackedLinear& p) { return p.name; })
      .def_prop_ro("scheme", [](const PackedLinear& p) { return p.scheme; })
      .def_prop_ro("group_size", [](const PackedLinear& p) { return p.group; })
      .def_prop_ro("has_bias", [](const PackedLinear& p) { return p.has_bias; })
      .def_prop_ro("weight_bytes", [](const PackedLinear& p) { return p.w->weight_bytes(); },
                   "Bytes one application reads (packed codes, scales, zero points, bias).")
      .def("apply", &PackedLinear::apply, "x"_a, "out"_a.noconvert(),
           "out[n, out_features] = x[n, in_features] W^T + b, float32, C-contiguous CPU arrays (numpy, torch,\n"
           "any DLPack producer), written in place without copies; the GIL is released while it runs.")
      .def_static(
          "from_int4",
          [](nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> codes,
             nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> scales,
             nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> zeros, int64_t group_size,
             std::optional<nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>> bias,
             const std::string& name) {
            const int64_t out = int64_t(codes.shape(0)), in = int64_t(codes.shape(1));
            if (group_size <= 0 || in % group_size)
              lq::fail(name, "group_size " + std::to_string(group_size) + " must divide in_features " + std::to_string(in));
            const size_t g = size_t(in / group_size);
            if (scales.shape(0) != size_t(out) || scales.shape(1) != g || zeros.shape(0) != size_t(out) || zeros.shape(1) != g)
              lq::fail(name, "scales and zeros must be [" + std::to_string(out) + ", " + std::to_string(g) + "]");
            lq::quant::QTensor qt;
            qt.scheme = lq::quant::Scheme::Int4Asym;
            qt.out = out;
            qt.in = in;
            qt.group = group_size;
            qt.codes.assign(codes.data(), codes.data() + codes.size());
            qt.scales.assign(scales.data(), scales.data() + scales.size());
            qt.zeros.assign(zeros.data(), zeros.data() + zeros.size());
            qt.scale_dtype = exact_scale_dtype(qt.scales);
            std::vector<float> b;
            if (bias) {
              if (bias->shape(0) != size_t(out)) lq::fail(name, "bias must have " + std::to_string(out) + " values");
              b.assign(bias->data(), bias->data() + bias->size());
            }
            return make_packed(std::move(qt), std::move(b), name);
          },
          "codes"_a, "scales"_a, "zeros"_a, "group_size"_a, "bias"_a = nb::none(), "name"_a = "PackedLinear",
          "Packs asymmetric INT4 weights w = (code - zero) * scale: codes [out, in] (0..15, one per byte),\n"
          "scales [out, in/group] float32, zeros [out, in/group] (0..15), optional bias [out].");
}
