// The table of on-disk layouts. Each row's functions are small and only describe the layout:
// names, dtypes, shapes, bit packing and config content. Details were checked against the public
// sources (AutoAWQ awq/utils/packing_utils.py + awq/modules/linear/gemm.py, compressed-tensors
// compressors/quantized_compressors/pack_quantized.py + nvfp4_quantized.py, ModelOpt's HF export);
// see shared/docs/formats.md.
#include <cmath>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstring>
#include <filesystem>
#include <fstream>
#include <cctype>
#include <map>
#include <optional>

#include "formats/layout.h"
#include "io/error.h"
#include "io/json_fields.h"
#include "io/model_files.h"
#include "num/formats.h"

namespace lq::formats::detail {

namespace fs = std::filesystem;
using json = nlohmann::json;
using quant::QTensor;
using quant::Scheme;
using quant::ScaleDType;

namespace {

// ---------------------------------------------------------------- shared helpers

template <class T>
Bytes as_bytes(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

template <class T>
std::vector<T> tensor_as(const io::SafetensorsFile& f, const std::string& name, io::DType want) {
  const io::TensorInfo& t = f.info(name);
  if (t.dtype != want)
    fail(f.path(), "tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected " + io::dtype_name(want));
  auto bytes = f.bytes(t);
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

const std::vector<int64_t>& shape_of(const io::SafetensorsFile& f, const std::string& name) { return f.info(name).shape; }

void expect_shape(const io::SafetensorsFile& f, const std::string& name, const std::vector<int64_t>& want) {
  if (shape_of(f, name) != want) {
    json got = shape_of(f, name), exp = want;
    fail(f.path(), "tensor '" + name + "' has shape " + got.dump() + ", expected " + exp.dump());
  }
}

// Two 4-bit codes per byte along the input axis: element 2i in the low nibble, 2i+1 in the high one
// (lance-quant-v1, compressed-tensors NVFP4, ModelOpt).
Bytes pack_nibble_pairs(const std::vector<uint8_t>& codes) {
  Bytes b(codes.size() / 2);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(codes[2 * i] | (codes[2 * i + 1] << 4));
  return b;
}
std::vector<uint8_t> unpack_nibble_pairs(const Bytes& b) {
  std::vector<uint8_t> c(b.size() * 2);
  size_t i = 0;
#if defined(__SSE2__)
  // 16 bytes -> 32 codes per step (SSE2 is baseline on x86-64): this runs over every weight at load.
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (; i + 16 <= b.size(); i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.data() + i));
    const __m128i lo = _mm_and_si128(v, low4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c.data() + 2 * i), _mm_unpacklo_epi8(lo, hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c.data() + 2 * i + 16), _mm_unpackhi_epi8(lo, hi));
  }
#endif
  for (; i < b.size(); ++i) {
    c[2 * i] = b[i] & 0xf;
    c[2 * i + 1] = b[i] >> 4;
  }
  return c;
}

// Scales stored as `dt`: every value must survive the conversion exactly (the QTensor holds the
// exact stored values; a format with a narrower dtype, e.g. AutoAWQ's fp16, must not round again).
Bytes store_scales(const std::vector<float>& s, ScaleDType dt, const std::string& where) {
  auto check = [&](float back, size_t i) {
    if (back != s[i])
      fail(where, "scale " + std::to_string(s[i]) + " (group " + std::to_string(i) + ") is not exactly representable as " +
                      quant::scale_dtype_name(dt) + (std::isinf(back) ? " (overflow to inf)" : "") +
                      "; quantize with this scale dtype");
  };
  if (dt == ScaleDType::F32) return as_bytes(s);
  std::vector<uint16_t> h(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    h[i] = dt == ScaleDType::BF16 ? num::f32_to_bf16(s[i]) : num::f32_to_f16(s[i]);
    check(dt == ScaleDType::BF16 ? num::bf16_to_f32(h[i]) : num::f16_to_f32(h[i]), i);
  }
  return as_bytes(h);
}
std::vector<float> load_scales(const io::SafetensorsFile& f, const std::string& name, ScaleDType* dt_out) {
  const io::TensorInfo& t = f.info(name);
  std::vector<float> v(size_t(t.numel()));
  switch (t.dtype) {
    case io::DType::BF16: *dt_out = ScaleDType::BF16; break;
    case io::DType::F16: *dt_out = ScaleDType::F16; break;
    case io::DType::F32: *dt_out = ScaleDType::F32; break;
    default: fail(f.path(), "scale tensor '" + name + "' has unsupported dtype " + io::dtype_name(t.dtype));
  }
  f.read_rows_f32(t, 0, t.rows(), v.data());
  return v;
}
io::DType scale_io_dtype(ScaleDType d) {
  return d == ScaleDType::BF16 ? io::DType::BF16 : d == ScaleDType::F16 ? io::DType::F16 : io::DType::F32;
}

QTensor blank_qtensor(const LinearDecl& d) {
  QTensor q;
  q.scheme = d.scheme;
  q.out = d.out;
  q.in = d.in;
  q.group = d.group;
  q.scale_dtype = d.scale_dtype;
  return q;
}

// A JSON object file of the checkpoint directory (the symlink rule of io/model_files.h applies).
json read_json(const std::string& dir, const std::string& name) {
  const std::string p = io::model_file(dir, name);
  if (p.empty()) fail((fs::path(dir) / name).string(), "does not exist");
  return io::read_json_object(p);
}
bool has_file(const std::string& dir, const std::string& name) { return !io::model_file(dir, name).empty(); }

// A 2-D tensor of dtype `want` (throws naming the file and tensor otherwise).
const std::vector<int64_t>& matrix_of(const io::SafetensorsFile& f, const std::string& name, io::DType want) {
  const io::TensorInfo& t = f.info(name);
  if (t.dtype != want)
    fail(f.path(), "tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected " + io::dtype_name(want));
  if (t.shape.size() != 2) fail(f.path(), "tensor '" + name + "' must be 2-D, has " + std::to_string(t.shape.size()) + " dimension(s)");
  return t.shape;
}

std::vector<std::string> quantized_bases(const std::vector<PlanEntry>& plan) {
  std::vector<std::string> v;
  for (const auto& e : plan)
    if (auto* l = std::get_if<LinearDecl>(&e)) v.push_back(l->base);
  return v;
}
// Modules left unquantized: plain 2-D `<module>.weight` tensors (linears, embeddings, lm_head).
std::vector<std::string> plain_modules(const std::vector<PlanEntry>& plan) {
  std::vector<std::string> v;
  for (const auto& e : plan)
    if (auto* p = std::get_if<PlainDecl>(&e))
      if (p->shape.size() == 2 && p->name.size() > 7 && p->name.ends_with(".weight"))
        v.push_back(p->name.substr(0, p->name.size() - 7));
  return v;
}
const LinearDecl* first_linear(const std::vector<PlanEntry>& plan) {
  for (const auto& e : plan)
    if (auto* l = std::get_if<LinearDecl>(&e)) return l;
  return nullptr;
}
const LinearDecl* first_integer_linear(const std::vector<PlanEntry>& plan) {
  for (const auto& e : plan)
    if (auto* l = std::get_if<LinearDecl>(&e); l && l->scheme != Scheme::NvFp4) return l;
  return nullptr;
}
// True when the plan's quantized linears do not all share one number format (scheme and group).
bool mixed_formats(const std::vector<PlanEntry>& plan) {
  const LinearDecl* l0 = first_linear(plan);
  for (const auto& e : plan)
    if (auto* l = std::get_if<LinearDecl>(&e); l && (l->scheme != l0->scheme || l->group != l0->group)) return true;
  return false;
}
json hf_config_with(const WriterOptions& o, json qc) {
  json c = o.model_config.is_object() ? o.model_config : json::object();
  c["quantization_config"] = std::move(qc);
  return c;
}
void require(bool ok, const LinearDecl& d, const std::string& what) {
  if (!ok) fail(d.base, what);
}
bool is_int4(Scheme s) { return s == Scheme::Int4Asym || s == Scheme::Int4Sym; }

// ---------------------------------------------------------------- lance-quant-v1

// INT8 is our extension of the layout (the original runtime reads INT4 and NVFP4 only): `.qweight`
// holds one code per byte [out, in], with the same bf16 scales and byte zeros (128) as INT4, and its
// per_weight entry says n_bit 8. A checkpoint with mixed formats is written to awq_state_dict with
// each linear's format in per_weight (NVFP4 linears recognisable by their scales_fp8 tensor).
bool v1_supports(Scheme) { return true; }
bool v1_all_nvfp4(const std::vector<PlanEntry>& plan) {
  const LinearDecl* l0 = first_linear(plan);
  return l0 && !first_integer_linear(plan);
}
const char* v1_file(const std::vector<PlanEntry>& plan) {
  return v1_all_nvfp4(plan) ? "nvfp4_state_dict.safetensors" : "awq_state_dict.safetensors";
}
void v1_check(const LinearDecl& d) {
  if (d.scheme != Scheme::Int8Sym) require(d.in % 2 == 0, d, "lance-quant-v1 packs two codes per byte: input width must be even");
  if (d.scheme != Scheme::NvFp4)
    require(d.scale_dtype == ScaleDType::BF16, d, "lance-quant-v1 stores integer scales as bf16 (quantize with bf16 scales)");
}
int64_t v1_code_bytes(const LinearDecl& d) { return d.scheme == Scheme::Int8Sym ? d.in : d.in / 2; }
std::vector<PartDecl> v1_parts(const LinearDecl& d) {
  const int64_t ng = d.in / d.group;
  if (d.scheme == Scheme::NvFp4)
    return {{".qweight", io::DType::U8, {d.out, d.in / 2}},
            {".scales_fp8", io::DType::U8, {d.out, ng}},
            {".scales_bf16", io::DType::BF16, {d.out, ng}}};
  return {{".qweight", io::DType::U8, {d.out, v1_code_bytes(d)}},
          {".scales", io::DType::BF16, {d.out, ng}},
          {".zeros", io::DType::U8, {d.out, ng}}};
}
std::vector<Bytes> v1_pack(const LinearDecl& d, const QTensor& q) {
  if (d.scheme == Scheme::Int8Sym) return {q.codes, store_scales(q.scales, ScaleDType::BF16, d.base), q.zeros};
  if (d.scheme != Scheme::NvFp4)
    return {pack_nibble_pairs(q.codes), store_scales(q.scales, ScaleDType::BF16, d.base), q.zeros};
  // Their runtime multiplies by scales_bf16 only, so e4m3 * tensor_scale must be exact in bf16
  // (true for the legacy encoding, t = 1, and for power-of-two tensor scales).
  std::vector<uint16_t> sb(q.block_scales.size());
  for (size_t i = 0; i < sb.size(); ++i) {
    const float s = quant::e4m3_value(q.block_scales[i]) * q.tensor_scale;
    sb[i] = num::f32_to_bf16(s);
    if (num::bf16_to_f32(sb[i]) != s)
      fail(d.base, "lance-quant-v1 NVFP4 stores block scales as bf16 without a tensor scale; block scale * tensor scale " +
                       std::to_string(s) + " is not exact in bf16 (use the legacy encoding or a power-of-two tensor scale, "
                       "or write modelopt / compressed-tensors)");
  }
  return {pack_nibble_pairs(q.codes), q.block_scales, as_bytes(sb)};
}
std::vector<std::pair<std::string, json>> v1_configs(const std::vector<PlanEntry>& plan, const WriterOptions& o) {
  const bool fp4 = v1_all_nvfp4(plan);
  json per_weight = json::object();
  for (const auto& e : plan)
    if (auto* l = std::get_if<LinearDecl>(&e)) {
      json w = {{"shape", {l->out, l->in}}, {"qscheme", quant::scheme_name(l->scheme)}};
      if (l->scheme == Scheme::NvFp4) {
        w["block_size"] = 16;
        w["scheme"] = "nvfp4";
      } else {
        w["n_bit"] = quant::scheme_bits(l->scheme);
        w["group_size"] = l->group;
        const auto m = o.linear_methods.find(l->base);
        w["scheme"] = m != o.linear_methods.end() ? m->second : o.method;
      }
      per_weight[l->base + ".weight"] = w;
    }
  json meta = {{"format", "lance-quant-v1"}, {"per_weight", per_weight}};
  if (fp4) {
    meta["block_size"] = 16;
    meta["scheme"] = "nvfp4";
  } else {
    // Top-level n_bit / group_size: the first integer linear's (the whole checkpoint's when not mixed).
    const LinearDecl* l0 = first_integer_linear(plan);
    meta["n_bit"] = l0 ? quant::scheme_bits(l0->scheme) : 4;
    meta["group_size"] = l0 ? l0->group : 0;
    if (mixed_formats(plan)) meta["mixed_formats"] = true;  // readers must use per_weight
    meta["scheme"] = o.method;
    // awq_linears is the original runtime's list of linears stored in its WQLinear layout (every
    // quantized linear, whatever the method); the method of each is per_weight[...].scheme, and the
    // pipeline adds linears_by_method / partial_calibration / tasks_calibrated through extra_meta.
    meta["awq_linears"] = quantized_bases(plan);
    meta["plain_linears"] = plain_modules(plan);
    meta["tasks_calibrated"] = json::array();
  }
  meta.update(o.extra_meta);
  return {{fp4 ? "nvfp4_meta.json" : "awq_meta.json", meta}};
}
bool v1_detect(const std::string& dir) { return has_file(dir, "awq_meta.json") || has_file(dir, "nvfp4_meta.json"); }
json v1_load(const std::string& dir) {
  json meta = read_json(dir, has_file(dir, "awq_meta.json") ? "awq_meta.json" : "nvfp4_meta.json");
  const io::JsonFields m(meta, (fs::path(dir) / (has_file(dir, "awq_meta.json") ? "awq_meta.json" : "nvfp4_meta.json")).string());
  if (const json* pw = m.object("per_weight"))
    for (const auto& [k, v] : pw->items())
      if (!v.is_object()) fail(m.where(), "per_weight['" + k + "'] must be a JSON object, got a JSON " + v.type_name());
  m.integer("group_size", 0, int64_t(1) << 31, 0);  // type-checked once here; describe reads it per linear
  return meta;
}
LinearDecl v1_describe(const io::SafetensorsFile& f, const json& meta, const std::string& base) {
  LinearDecl d;
  d.base = base;
  const bool fp4 = f.has(base + ".scales_fp8");
  const auto& qw = matrix_of(f, base + ".qweight", io::DType::U8);
  d.out = qw[0];
  d.in = qw[1] * 2;
  const json* per_weight = meta.contains("per_weight") ? &meta.at("per_weight") : nullptr;
  const json empty = json::object();
  const json& pw = per_weight && per_weight->contains(base + ".weight") ? per_weight->at(base + ".weight") : empty;
  const io::JsonFields w(pw, f.path() + ": meta per_weight '" + base + ".weight'"), top(meta, f.path() + ": meta");
  if (fp4) {
    d.scheme = Scheme::NvFp4;
    d.group = 16;
  } else {
    d.scheme = quant::parse_scheme(w.string("qscheme", std::string("int4_asym")), f.path() + ": " + base);
    if (d.scheme == Scheme::NvFp4) fail(f.path(), "'" + base + "' is nvfp4 in the meta but has no scales_fp8 tensor");
    if (d.scheme == Scheme::Int8Sym) d.in = qw[1];  // one code per byte
    d.group = w.integer("group_size", 0, int64_t(1) << 31, top.integer("group_size", 0, int64_t(1) << 31, 0));
    if (d.group == 0) {  // derived from the scales: in / groups per row
      const auto& sc = matrix_of(f, base + ".scales", io::DType::BF16);
      if (sc[1] <= 0 || d.in % sc[1] != 0)
        fail(f.path(), "'" + base + ".scales' has " + std::to_string(sc[1]) + " groups per row, which do not divide the input width " +
                           std::to_string(d.in));
      d.group = d.in / sc[1];
    }
  }
  d.has_bias = f.has(base + ".bias");
  return d;
}
QTensor v1_unpack(const io::SafetensorsFile& f, const LinearDecl& d) {
  for (const auto& p : v1_parts(d)) expect_shape(f, d.base + p.suffix, p.shape);
  QTensor q = blank_qtensor(d);
  q.codes = tensor_as<uint8_t>(f, d.base + ".qweight", io::DType::U8);
  if (d.scheme != Scheme::Int8Sym) q.codes = unpack_nibble_pairs(q.codes);
  if (d.scheme != Scheme::NvFp4) {
    ScaleDType dt;
    q.scales = load_scales(f, d.base + ".scales", &dt);
    q.scale_dtype = dt;
    q.zeros = tensor_as<uint8_t>(f, d.base + ".zeros", io::DType::U8);
    return q;
  }
  q.block_scales = tensor_as<uint8_t>(f, d.base + ".scales_fp8", io::DType::U8);
  // Their runtime uses scales_bf16: recover the tensor scale from it and insist that it agrees.
  std::vector<uint16_t> sb = tensor_as<uint16_t>(f, d.base + ".scales_bf16", io::DType::BF16);
  q.tensor_scale = 1.0f;
  for (size_t i = 0; i < sb.size(); ++i) {
    const float e = quant::e4m3_value(q.block_scales[i]);
    if (e != 0.0f) {
      q.tensor_scale = num::bf16_to_f32(sb[i]) / e;
      break;
    }
  }
  for (size_t i = 0; i < sb.size(); ++i)
    if (num::bf16_to_f32(sb[i]) != quant::e4m3_value(q.block_scales[i]) * q.tensor_scale)
      fail(f.path(), "'" + d.base + ".scales_bf16' disagrees with scales_fp8 at block " + std::to_string(i) +
                         "; the file cannot be read as NVFP4");
  return q;
}

// ---------------------------------------------------------------- AutoAWQ GEMM

// Nibble i of each int32 holds output column 8c + kAwqOrder[i] (AutoAWQ's AWQ_ORDER).
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

bool awq_supports(Scheme s) { return is_int4(s); }
const char* hf_file(const std::vector<PlanEntry>&) { return "model.safetensors"; }
void awq_check(const LinearDecl& d) {
  require(d.out % 8 == 0, d, "autoawq packs 8 output columns per int32: output width must be a multiple of 8");
}
std::vector<PartDecl> awq_parts(const LinearDecl& d) {
  const int64_t ng = d.in / d.group;
  return {{".qweight", io::DType::I32, {d.in, d.out / 8}},
          {".qzeros", io::DType::I32, {ng, d.out / 8}},
          {".scales", io::DType::F16, {ng, d.out}}};
}
// Packs a [out][cols] byte matrix, transposed, into int32 [cols][out/8] in AWQ order.
std::vector<int32_t> awq_pack_transposed(const std::vector<uint8_t>& v, int64_t out, int64_t cols) {
  std::vector<int32_t> p(size_t(cols * (out / 8)));
  for (int64_t k = 0; k < cols; ++k)
    for (int64_t c = 0; c < out / 8; ++c) {
      uint32_t word = 0;
      for (int i = 0; i < 8; ++i) word |= uint32_t(v[size_t((8 * c + kAwqOrder[i]) * cols + k)] & 0xf) << (4 * i);
      p[size_t(k * (out / 8) + c)] = int32_t(word);
    }
  return p;
}
std::vector<uint8_t> awq_unpack_transposed(const std::vector<int32_t>& p, int64_t out, int64_t cols) {
  std::vector<uint8_t> v(size_t(out * cols));
  for (int64_t k = 0; k < cols; ++k)
    for (int64_t c = 0; c < out / 8; ++c) {
      const uint32_t word = uint32_t(p[size_t(k * (out / 8) + c)]);
      for (int i = 0; i < 8; ++i) v[size_t((8 * c + kAwqOrder[i]) * cols + k)] = (word >> (4 * i)) & 0xf;
    }
  return v;
}
std::vector<Bytes> awq_pack(const LinearDecl& d, const QTensor& q) {
  const int64_t ng = d.in / d.group;
  std::vector<float> st(q.scales.size());  // [ng][out]
  for (int64_t n = 0; n < d.out; ++n)
    for (int64_t g = 0; g < ng; ++g) st[size_t(g * d.out + n)] = q.scales[size_t(n * ng + g)];
  return {as_bytes(awq_pack_transposed(q.codes, d.out, d.in)), as_bytes(awq_pack_transposed(q.zeros, d.out, ng)),
          store_scales(st, ScaleDType::F16, d.base + " (autoawq stores fp16 scales)")};
}
std::vector<std::pair<std::string, json>> awq_configs(const std::vector<PlanEntry>& plan, const WriterOptions& o) {
  const LinearDecl* l0 = first_linear(plan);
  json qc = {{"quant_method", "awq"}, {"zero_point", true}, {"group_size", l0 ? l0->group : 128},
             {"bits", 4},           {"version", "gemm"},  {"modules_to_not_convert", plain_modules(plan)}};
  return {{"config.json", hf_config_with(o, qc)}};
}
json hf_load(const std::string& dir) {
  json c = read_json(dir, "config.json");
  const io::JsonFields cf(c, (fs::path(dir) / "config.json").string());
  if (!cf.object("quantization_config")) fail(cf.where(), "no quantization_config");
  return c["quantization_config"];
}
std::string hf_quant_method(const std::string& dir) {
  if (!has_file(dir, "config.json")) return "";
  const json c = read_json(dir, "config.json");
  const io::JsonFields cf(c, (fs::path(dir) / "config.json").string());
  const json* qc = cf.object("quantization_config");
  return qc ? io::JsonFields(*qc, cf.where() + ": quantization_config").string("quant_method", std::string()) : "";
}
bool awq_detect(const std::string& dir) { return hf_quant_method(dir) == "awq"; }
LinearDecl awq_describe(const io::SafetensorsFile& f, const json& qc, const std::string& base) {
  LinearDecl d;
  d.base = base;
  d.scheme = Scheme::Int4Asym;  // zero points are stored; a symmetric tensor reads back with zeros = 8
  d.scale_dtype = ScaleDType::F16;
  const io::JsonFields q(qc, "config.json: quantization_config");
  std::string version = q.string("version", std::string("gemm"));
  for (char& ch : version) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (q.integer("bits", 1, 64, 4) != 4 || version != "gemm")
    fail(f.path(), "only 4-bit AutoAWQ GEMM checkpoints are supported");
  d.in = matrix_of(f, base + ".qweight", io::DType::I32)[0];
  d.out = matrix_of(f, base + ".scales", io::DType::F16)[1];  // AutoAWQ's scales are fp16 (shared/docs/formats.md)
  d.group = q.integer("group_size", -1, int64_t(1) << 31, 0);
  if (d.group <= 0) d.group = d.in;  // -1 (or 0): one group per input row, as AutoAWQ's q_group_size = -1
  d.has_bias = f.has(base + ".bias");
  return d;
}
QTensor awq_unpack(const io::SafetensorsFile& f, const LinearDecl& d) {
  for (const auto& p : awq_parts(d)) expect_shape(f, d.base + p.suffix, p.shape);
  const int64_t ng = d.in / d.group;
  QTensor q = blank_qtensor(d);
  q.codes = awq_unpack_transposed(tensor_as<int32_t>(f, d.base + ".qweight", io::DType::I32), d.out, d.in);
  q.zeros = awq_unpack_transposed(tensor_as<int32_t>(f, d.base + ".qzeros", io::DType::I32), d.out, ng);
  ScaleDType dt;
  std::vector<float> st = load_scales(f, d.base + ".scales", &dt);
  q.scale_dtype = dt;
  q.scales.resize(st.size());
  for (int64_t n = 0; n < d.out; ++n)
    for (int64_t g = 0; g < ng; ++g) q.scales[size_t(n * ng + g)] = st[size_t(g * d.out + n)];
  return q;
}

// ---------------------------------------------------------------- compressed-tensors

bool ct_supports(Scheme) { return true; }
void ct_check(const LinearDecl&) {}
int64_t ct_pack_factor(Scheme s) { return 32 / quant::scheme_bits(s); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
std::vector<PartDecl> ct_parts(const LinearDecl& d) {
  const int64_t ng = d.in / d.group;
  if (d.scheme == Scheme::NvFp4)
    return {{".weight_packed", io::DType::U8, {d.out, d.in / 2}},
            {".weight_scale", io::DType::F8_E4M3, {d.out, ng}},
            {".weight_global_scale", io::DType::F32, {1}}};
  const int64_t pf = ct_pack_factor(d.scheme);
  std::vector<PartDecl> p = {{".weight_packed", io::DType::I32, {d.out, ceil_div(d.in, pf)}},
                             {".weight_scale", scale_io_dtype(d.scale_dtype), {d.out, ng}}};
  if (d.scheme == Scheme::Int4Asym) p.push_back({".weight_zero_point", io::DType::I32, {ceil_div(d.out, pf), ng}});
  p.push_back({".weight_shape", io::DType::I64, {2}});
  return p;
}
// pack_to_int32: unsigned codes (signed value + 2^(bits-1), i.e. exactly our codes), element
// pf*j + i at bits bits*i of word j, along dim 1 (packed_dim 0: along rows), zero padded.
std::vector<int32_t> ct_pack(const std::vector<uint8_t>& v, int64_t rows, int64_t cols, int bits, bool along_rows) {
  const int64_t pf = 32 / bits;
  const int64_t prow = along_rows ? ceil_div(rows, pf) : rows, pcol = along_rows ? cols : ceil_div(cols, pf);
  std::vector<int32_t> p(size_t(prow * pcol), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t pr = along_rows ? r / pf : r, pc = along_rows ? c : c / pf, slot = along_rows ? r % pf : c % pf;
      uint32_t& w = reinterpret_cast<uint32_t&>(p[size_t(pr * pcol + pc)]);
      w |= uint32_t(v[size_t(r * cols + c)]) << (bits * slot);
    }
  return p;
}
std::vector<uint8_t> ct_unpack(const std::vector<int32_t>& p, int64_t rows, int64_t cols, int bits, bool along_rows) {
  const int64_t pf = 32 / bits, pcol = along_rows ? cols : ceil_div(cols, pf);
  const uint32_t mask = (1u << bits) - 1;
  std::vector<uint8_t> v(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t pr = along_rows ? r / pf : r, pc = along_rows ? c : c / pf, slot = along_rows ? r % pf : c % pf;
      v[size_t(r * cols + c)] = uint8_t((uint32_t(p[size_t(pr * pcol + pc)]) >> (bits * slot)) & mask);
    }
  return v;
}
std::vector<Bytes> ct_pack_all(const LinearDecl& d, const QTensor& q) {
  const int64_t ng = d.in / d.group;
  if (d.scheme == Scheme::NvFp4) {
    // Dequant in compressed-tensors: e2m1 * fp32(weight_scale) / weight_global_scale; the tensor
    // scale is chosen so that 1 / (1 / t) == t in fp32 (see quant/nvfp4.h).
    const float global = 1.0f / q.tensor_scale;
    return {pack_nibble_pairs(q.codes), q.block_scales, as_bytes(std::vector<float>{global})};
  }
  const int bits = quant::scheme_bits(d.scheme);
  std::vector<Bytes> b = {as_bytes(ct_pack(q.codes, d.out, d.in, bits, false)),
                          store_scales(q.scales, d.scale_dtype, d.base)};
  if (d.scheme == Scheme::Int4Asym) b.push_back(as_bytes(ct_pack(q.zeros, d.out, ng, bits, true)));
  b.push_back(as_bytes(std::vector<int64_t>{d.out, d.in}));
  return b;
}
const char* ct_torch_dtype_name(io::DType d);
json ct_weights_args(const LinearDecl& d) {
  if (d.scheme == Scheme::NvFp4)
    return {{"num_bits", 4}, {"type", "float"}, {"symmetric", true}, {"strategy", "tensor_group"},
            {"group_size", 16}, {"dynamic", false}, {"observer", "minmax"}, {"actorder", nullptr}};
  const bool channel = d.group == d.in;
  // scale_dtype (compressed-tensors' QuantizationArgs field) records what the scales are, so a reader
  // can refuse scales relabelled to another dtype.
  return {{"num_bits", quant::scheme_bits(d.scheme)}, {"type", "int"}, {"symmetric", d.scheme != Scheme::Int4Asym},
          {"strategy", channel ? "channel" : "group"}, {"group_size", channel ? json(nullptr) : json(d.group)},
          {"dynamic", false}, {"observer", "minmax"}, {"actorder", nullptr},
          {"scale_dtype", ct_torch_dtype_name(scale_io_dtype(d.scale_dtype))}};
}
const char* ct_format(Scheme s) { return s == Scheme::NvFp4 ? "nvfp4-pack-quantized" : "pack-quantized"; }
std::vector<std::pair<std::string, json>> ct_configs(const std::vector<PlanEntry>& plan, const WriterOptions& o) {
  const LinearDecl* l0 = first_linear(plan);
  // One compressor for the whole model when every group shares it; otherwise compressed-tensors'
  // "mixed-precision" format, where each config group names its own.
  bool one_compressor = true;
  for (const auto& e : plan)
    if (auto* l = std::get_if<LinearDecl>(&e)) one_compressor = one_compressor && std::string(ct_format(l->scheme)) == ct_format(l0->scheme);
  json qc = {{"quant_method", "compressed-tensors"},
             {"format", !l0 ? "pack-quantized" : one_compressor ? ct_format(l0->scheme) : "mixed-precision"},
             {"quantization_status", "compressed"},
             {"ignore", plain_modules(plan)},
             {"config_groups", json::object()}};
  if (l0) {
    // Targets are the exact module names (never a class name): nothing unplanned gets quantized.
    // Different group sizes / scale dtypes make separate groups.
    std::map<std::string, std::vector<std::string>> groups;
    std::map<std::string, json> args;
    std::map<std::string, const char*> compressor;
    for (const auto& e : plan)
      if (auto* l = std::get_if<LinearDecl>(&e)) {
        const json a = ct_weights_args(*l);
        groups[a.dump()].push_back(l->base);
        args[a.dump()] = a;
        compressor[a.dump()] = ct_format(l->scheme);
      }
    int i = 0;
    for (const auto& [key, targets] : groups)
      qc["config_groups"]["group_" + std::to_string(i++)] = {{"targets", targets},
                                                             {"weights", args[key]},
                                                             {"input_activations", nullptr},
                                                             {"output_activations", nullptr},
                                                             {"format", compressor[key]}};
  }
  return {{"config.json", hf_config_with(o, qc)}};
}
bool ct_detect(const std::string& dir) { return hf_quant_method(dir) == "compressed-tensors"; }
const json& ct_group_of(const json& qc, const std::string& base) {
  const io::JsonFields q(qc, "config.json: quantization_config");
  if (const json* groups = q.object("config_groups"))
    for (const auto& [name, g] : groups->items()) {
      const io::JsonFields gf(g, "config.json: quantization_config.config_groups." + name);
      for (const auto& t : gf.strings("targets"))
        if (t == base) return g;
      if (groups->size() == 1) return g;  // class-name targets ("Linear"): the only group
    }
  fail(base, "no compressed-tensors config group targets this module");
}
// The scale dtype a compressed-tensors weights args records ("torch.bfloat16", ...), when it does.
std::optional<io::DType> ct_recorded_scale_dtype(const io::JsonFields& w) {
  if (!w.has("scale_dtype")) return std::nullopt;
  std::string s = w.string("scale_dtype");
  if (s.rfind("torch.", 0) == 0) s = s.substr(6);
  if (s == "bfloat16") return io::DType::BF16;
  if (s == "float16" || s == "half") return io::DType::F16;
  if (s == "float32" || s == "float") return io::DType::F32;
  if (s == "float8_e4m3fn") return io::DType::F8_E4M3;
  fail(w.where(), "unsupported scale_dtype '" + w.string("scale_dtype") + "'");
}
const char* ct_torch_dtype_name(io::DType d) {
  switch (d) {
    case io::DType::BF16: return "torch.bfloat16";
    case io::DType::F16: return "torch.float16";
    case io::DType::F32: return "torch.float32";
    case io::DType::F8_E4M3: return "torch.float8_e4m3fn";
    default: return "?";
  }
}
LinearDecl ct_describe(const io::SafetensorsFile& f, const json& qc, const std::string& base) {
  LinearDecl d;
  d.base = base;
  const json& group = ct_group_of(qc, base);
  const io::JsonFields g(group, f.path() + ": config group of '" + base + "'"), q(qc, "config.json: quantization_config");
  const json empty = json::object();
  const json* wj = g.object("weights");
  const io::JsonFields w(wj ? *wj : empty, g.where() + ": weights");
  const std::string fmt = g.string("format", q.string("format", std::string()));
  const std::optional<io::DType> recorded = ct_recorded_scale_dtype(w);
  if (fmt == "nvfp4-pack-quantized" || f.has(base + ".weight_global_scale")) {
    d.scheme = Scheme::NvFp4;
    d.group = 16;
    const auto& packed = matrix_of(f, base + ".weight_packed", io::DType::U8);
    d.out = packed[0];
    d.in = packed[1] * 2;
    if (recorded && *recorded != io::DType::F8_E4M3)
      fail(f.path(), base + ": nvfp4 block scales are float8_e4m3fn, the config records scale_dtype " + w.string("scale_dtype"));
  } else {
    const int64_t bits = w.integer("num_bits", 1, 64, 4);
    const bool sym = w.boolean("symmetric", true);
    if (bits == 4) d.scheme = sym ? Scheme::Int4Sym : Scheme::Int4Asym;
    else if (bits == 8 && sym) d.scheme = Scheme::Int8Sym;
    else fail(f.path(), base + ": unsupported compressed-tensors weights (num_bits " + std::to_string(bits) + (sym ? ", symmetric)" : ", asymmetric)"));
    // weight_shape: [out, in] as 2 integers (I64, or I32 from older writers).
    const io::TensorInfo& ws = f.info(base + ".weight_shape");
    if ((ws.dtype != io::DType::I64 && ws.dtype != io::DType::I32) || ws.numel() != 2)
      fail(f.path(), "tensor '" + base + ".weight_shape' must hold 2 integers (I64 or I32), has " + std::to_string(ws.numel()) + " " +
                         io::dtype_name(ws.dtype));
    std::vector<int64_t> shape;
    if (ws.dtype == io::DType::I64) shape = tensor_as<int64_t>(f, base + ".weight_shape", io::DType::I64);
    else for (auto v : tensor_as<int32_t>(f, base + ".weight_shape", io::DType::I32)) shape.push_back(v);
    d.out = shape[0];
    d.in = shape[1];
    const std::string strategy = w.string("strategy", std::string("group"));
    if (strategy == "channel") d.group = d.in;
    else if (strategy == "group") d.group = w.integer("group_size", 1, int64_t(1) << 31);
    else fail(f.path(), base + ": unsupported compressed-tensors strategy '" + strategy + "' (group or channel)");
    const io::DType sdt = f.info(base + ".weight_scale").dtype;
    if (sdt != io::DType::BF16 && sdt != io::DType::F16 && sdt != io::DType::F32)
      fail(f.path(), "tensor '" + base + ".weight_scale' has dtype " + io::dtype_name(sdt) + ", expected BF16, F16 or F32");
    if (recorded && *recorded != sdt)
      fail(f.path(), "tensor '" + base + ".weight_scale' is " + io::dtype_name(sdt) + " but the config records scale_dtype " +
                         w.string("scale_dtype") + ": the scales were relabelled, refusing to reinterpret them");
    d.scale_dtype = sdt == io::DType::F16 ? ScaleDType::F16 : sdt == io::DType::F32 ? ScaleDType::F32 : ScaleDType::BF16;
  }
  d.has_bias = f.has(base + ".bias");
  return d;
}
QTensor ct_unpack_all(const io::SafetensorsFile& f, const LinearDecl& d) {
  for (const auto& p : ct_parts(d))
    if (p.suffix != ".weight_shape" && p.suffix != ".weight_global_scale") expect_shape(f, d.base + p.suffix, p.shape);
  QTensor q = blank_qtensor(d);
  const int64_t ng = d.in / d.group;
  if (d.scheme == Scheme::NvFp4) {
    q.codes = unpack_nibble_pairs(tensor_as<uint8_t>(f, d.base + ".weight_packed", io::DType::U8));
    q.block_scales = tensor_as<uint8_t>(f, d.base + ".weight_scale", io::DType::F8_E4M3);
    const std::vector<float> g = tensor_as<float>(f, d.base + ".weight_global_scale", io::DType::F32);
    if (g.size() != 1 || !(g[0] > 0.0f)) fail(f.path(), d.base + ".weight_global_scale must be one positive value");
    q.tensor_scale = 1.0f / g[0];
    return q;
  }
  const int bits = quant::scheme_bits(d.scheme);
  q.codes = ct_unpack(tensor_as<int32_t>(f, d.base + ".weight_packed", io::DType::I32), d.out, d.in, bits, false);
  ScaleDType dt;
  q.scales = load_scales(f, d.base + ".weight_scale", &dt);
  q.scale_dtype = dt;
  if (d.scheme == Scheme::Int4Asym)
    q.zeros = ct_unpack(tensor_as<int32_t>(f, d.base + ".weight_zero_point", io::DType::I32), d.out, ng, bits, true);
  else
    q.zeros.assign(size_t(d.out * ng), uint8_t(quant::fixed_zero(d.scheme)));
  return q;
}

// ---------------------------------------------------------------- NVIDIA ModelOpt NVFP4

bool mo_supports(Scheme s) { return s == Scheme::NvFp4; }
void mo_check(const LinearDecl&) {}
std::vector<PartDecl> mo_parts(const LinearDecl& d) {
  return {{".weight", io::DType::U8, {d.out, d.in / 2}},
          {".weight_scale", io::DType::F8_E4M3, {d.out, d.in / 16}},
          {".weight_scale_2", io::DType::F32, {}}};
}
std::vector<Bytes> mo_pack(const LinearDecl&, const QTensor& q) {
  return {pack_nibble_pairs(q.codes), q.block_scales, as_bytes(std::vector<float>{q.tensor_scale})};
}
std::vector<std::pair<std::string, json>> mo_configs(const std::vector<PlanEntry>& plan, const WriterOptions& o) {
  const json excluded = plain_modules(plan);
  json hf_quant = {{"producer", {{"name", "modelopt"}, {"version", "lance-quant"}}},
                   {"quantization", {{"quant_algo", "NVFP4"}, {"kv_cache_quant_algo", nullptr}, {"group_size", 16},
                                     {"exclude_modules", excluded}}}};
  json qc = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}, {"group_size", 16}, {"kv_cache_quant_algo", nullptr},
             {"exclude_modules", excluded}};
  return {{"hf_quant_config.json", hf_quant}, {"config.json", hf_config_with(o, qc)}};
}
bool mo_detect(const std::string& dir) { return has_file(dir, "hf_quant_config.json"); }
json mo_load(const std::string& dir) {
  json c = read_json(dir, "hf_quant_config.json");
  const io::JsonFields cf(c, (fs::path(dir) / "hf_quant_config.json").string());
  const json* q = cf.object("quantization");
  const std::string algo = q ? io::JsonFields(*q, cf.where() + ": quantization").string("quant_algo", std::string()) : "";
  if (algo != "NVFP4") fail(cf.where(), "only quant_algo NVFP4 is supported, got '" + algo + "'");
  if (q) io::JsonFields(*q, cf.where() + ": quantization").integer("group_size", 16, 16, 16);
  return c;
}
LinearDecl mo_describe(const io::SafetensorsFile& f, const json&, const std::string& base) {
  LinearDecl d;
  d.base = base;
  d.scheme = Scheme::NvFp4;
  d.group = 16;
  const auto& w = matrix_of(f, base + ".weight", io::DType::U8);
  d.out = w[0];
  d.in = w[1] * 2;
  d.has_bias = f.has(base + ".bias");
  return d;
}
QTensor mo_unpack(const io::SafetensorsFile& f, const LinearDecl& d) {
  expect_shape(f, d.base + ".weight", {d.out, d.in / 2});
  expect_shape(f, d.base + ".weight_scale", {d.out, d.in / 16});
  QTensor q = blank_qtensor(d);
  q.codes = unpack_nibble_pairs(tensor_as<uint8_t>(f, d.base + ".weight", io::DType::U8));
  q.block_scales = tensor_as<uint8_t>(f, d.base + ".weight_scale", io::DType::F8_E4M3);
  const std::vector<float> t = tensor_as<float>(f, d.base + ".weight_scale_2", io::DType::F32);
  if (t.size() != 1) fail(f.path(), d.base + ".weight_scale_2 must be a scalar");
  q.tensor_scale = t[0];
  return q;
}

const Layout kLayouts[] = {
    {FormatId::LanceQuantV1, "lance-quant-v1", v1_supports, false, v1_file, io::DType::BF16, v1_check, v1_parts, v1_pack,
     v1_configs, v1_detect, v1_load, ".qweight", v1_describe, v1_unpack},
    {FormatId::AutoAwq, "autoawq", awq_supports, true, hf_file, io::DType::F16, awq_check, awq_parts, awq_pack, awq_configs,
     awq_detect, hf_load, ".qzeros", awq_describe, awq_unpack},
    {FormatId::CompressedTensors, "compressed-tensors", ct_supports, false, hf_file, io::DType::BF16, ct_check, ct_parts,
     ct_pack_all, ct_configs, ct_detect, hf_load, ".weight_packed", ct_describe, ct_unpack_all},
    {FormatId::ModelOpt, "modelopt", mo_supports, true, hf_file, io::DType::BF16, mo_check, mo_parts, mo_pack, mo_configs,
     mo_detect, mo_load, ".weight_scale_2", mo_describe, mo_unpack},
};

}  // namespace

const Layout& layout_of(FormatId f) {
  for (const auto& l : kLayouts)
    if (l.id == f) return l;
  fail("formats", "unknown format id");
}

const std::vector<const Layout*>& all_layouts() {
  static const std::vector<const Layout*> v = [] {
    std::vector<const Layout*> r;
    for (const auto& l : kLayouts) r.push_back(&l);
    return r;
  }();
  return v;
}

}  // namespace lq::formats::detail
