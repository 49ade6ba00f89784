// The oneDNN backend of kernels::Conv2d (Debian's libdnnl, OpenMP runtime). Our activations are
// channels-last (oneDNN tag nhwc); the primitive is created with "any" layouts, so oneDNN picks its
// fastest (on AVX2: jit:avx2 direct convolution on 8-channel blocks), and every call reorders the
// input into that layout and the output back (a memory pass each: measured 1.06-1.24x faster overall
// than running the same primitive on nhwc directly, which was 0.5-0.8x our GEMM). The weights are
// reordered once; accumulation uses oneDNN's "sum" post-op. Primitives are created per input size
// and kept (a VAE runs each layer on one or two sizes).
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "io/error.h"
#include "kernels/conv_impl.h"
#include "kernels/parallel.h"

#ifdef LQ_HAVE_DNNL
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace lq::kernels {

#ifdef LQ_HAVE_DNNL

bool dnnl_available() { return true; }

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// A shape the weights are reordered for at construction (oneDNN picks the weight layout per
// implementation; sizes of one layer normally share it, else run() reorders once more).
constexpr int64_t kNominalSize = 64;

}  // namespace

struct DnnlConv {
  Conv2dParams p;
  memory weights;       // in `weights.get_desc()`'s layout
  memory bias, zero_bias;
  // Everything one input size needs, created once: the convolution, the reorders between our nhwc
  // buffers and its blocked layouts, and the blocked buffers themselves.
  struct Prim {
    dnnl::convolution_forward conv;
    memory weights;  // same object as DnnlConv::weights unless this size wanted another layout
    memory::desc user_src, user_dst;
    bool reorder_src = false, reorder_dst = false;
    memory::desc src_blk, dst_blk;  // blocked layouts; their buffers are the caller thread's scratch
    dnnl::reorder to_src, to_dst, from_dst;
  };
  std::map<std::tuple<int64_t, int64_t, bool, bool>, Prim> prims;
  std::mutex mu;

  memory::desc weights_any() const {
    return memory::desc({p.cout, p.cin, p.kh, p.kw}, dt::f32, tag::any);
  }

  dnnl::convolution_forward::primitive_desc make_pd(int64_t h, int64_t w, bool accumulate, bool with_bias) const {
    const memory::desc src({1, p.cin, h, w}, dt::f32, tag::any);
    const memory::desc dst({1, p.cout, p.out_h(h), p.out_w(w)}, dt::f32, tag::any);
    const memory::desc bias_md({p.cout}, dt::f32, tag::a);
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    const memory::dims strides{p.stride, p.stride}, pad_l{p.pad_top, p.pad_left}, pad_r{p.pad_bottom, p.pad_right};
    if (with_bias) {
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                        weights_any(), bias_md, dst, strides, pad_l, pad_r);
      return dnnl::convolution_forward::primitive_desc(d, attr, cpu_engine());
    }
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                      weights_any(), dst, strides, pad_l, pad_r);
    return dnnl::convolution_forward::primitive_desc(d, attr, cpu_engine());
  }
};

DnnlConv* make_dnnl_conv(const Conv2dParams& p, const float* w, const float* bias) {
  auto c = std::make_unique<DnnlConv>();
  c->p = p;
  try {
    dnnl::stream s(cpu_engine());
    const memory::desc user_md({p.cout, p.cin, p.kh, p.kw}, dt::f32, tag::ohwi);
    memory user(user_md, cpu_engine(), const_cast<float*>(w));
    const int64_t nominal_h = std::max<int64_t>(kNominalSize, p.kh), nominal_w = std::max<int64_t>(kNominalSize, p.kw);
    const auto pd = c->make_pd(nominal_h, nominal_w, false, true);
    c->weights = memory(pd.weights_desc(), cpu_engine());
    dnnl::reorder(user, c->weights).execute(s, user, c->weights);
    c->bias = memory(memory::desc({p.cout}, dt::f32, tag::a), cpu_engine());
    float* b = static_cast<float*>(c->bias.get_data_handle());
    for (int64_t i = 0; i < p.cout; ++i) b[i] = bias ? bias[i] : 0.0f;
    s.wait();
  } catch (const dnnl::error& e) {
    fail("conv2d (oneDNN)", std::string("cannot create the convolution: ") + e.what());
  }
  return c.release();
}

void destroy_dnnl_conv(DnnlConv* c) { delete c; }

void run_dnnl_conv(DnnlConv& c, const float* x, int64_t h, int64_t w, float* y, bool accumulate, bool add_bias) {
  std::lock_guard<std::mutex> lock(c.mu);
  omp_set_num_threads(num_threads());
  try {
    dnnl::stream s(cpu_engine());
    const auto key = std::make_tuple(h, w, accumulate, add_bias);
    auto it = c.prims.find(key);
    if (it == c.prims.end()) {
      const auto pd = c.make_pd(h, w, accumulate, add_bias);
      DnnlConv::Prim prim;
      prim.conv = dnnl::convolution_forward(pd);
      prim.weights = c.weights;
      if (pd.weights_desc() != c.weights.get_desc()) {  // this size wants another weight layout
        prim.weights = memory(pd.weights_desc(), cpu_engine());
        dnnl::reorder(c.weights, prim.weights).execute(s, c.weights, prim.weights);
      }
      prim.user_src = memory::desc({1, c.p.cin, h, w}, dt::f32, tag::nhwc);
      prim.user_dst = memory::desc({1, c.p.cout, c.p.out_h(h), c.p.out_w(w)}, dt::f32, tag::nhwc);
      prim.reorder_src = pd.src_desc() != prim.user_src;
      prim.reorder_dst = pd.dst_desc() != prim.user_dst;
      if (prim.reorder_src) {
        prim.src_blk = pd.src_desc();
        prim.to_src = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), prim.user_src, cpu_engine(), pd.src_desc()));
      }
      if (prim.reorder_dst) {
        prim.dst_blk = pd.dst_desc();
        prim.to_dst = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), prim.user_dst, cpu_engine(), pd.dst_desc()));
        prim.from_dst = dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), pd.dst_desc(), cpu_engine(), prim.user_dst));
      }
      it = c.prims.emplace(key, std::move(prim)).first;
    }
    DnnlConv::Prim& prim = it->second;
    memory src(prim.user_src, cpu_engine(), const_cast<float*>(x)), dst(prim.user_dst, cpu_engine(), y);
    // Blocked copies live in per-thread scratch shared by every convolution (sized by the largest frame),
    // so memory does not grow with the number of layers.
    thread_local std::vector<float> src_scratch, dst_scratch;
    memory src_blk = src, dst_blk = dst;
    if (prim.reorder_src) {
      src_scratch.resize(prim.src_blk.get_size() / sizeof(float) + 1);
      src_blk = memory(prim.src_blk, cpu_engine(), src_scratch.data());
      prim.to_src.execute(s, src, src_blk);
    }
    if (prim.reorder_dst) {
      dst_scratch.resize(prim.dst_blk.get_size() / sizeof(float) + 1);
      dst_blk = memory(prim.dst_blk, cpu_engine(), dst_scratch.data());
      if (accumulate) prim.to_dst.execute(s, dst, dst_blk);
    }
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_blk}, {DNNL_ARG_WEIGHTS, prim.weights}, {DNNL_ARG_DST, dst_blk}};
    if (add_bias) args.insert({DNNL_ARG_BIAS, c.bias});
    prim.conv.execute(s, args);
    if (prim.reorder_dst) prim.from_dst.execute(s, dst_blk, dst);
    s.wait();
  } catch (const dnnl::error& e) {
    fail("conv2d (oneDNN)", std::string("execution failed: ") + e.what());
  }
}

#else  // no oneDNN in this build

bool dnnl_available() { return false; }
struct DnnlConv {};
DnnlConv* make_dnnl_conv(const Conv2dParams&, const float*, const float*) {
  fail("conv2d", "this build has no oneDNN (install libdnnl-dev and reconfigure)");
}
void destroy_dnnl_conv(DnnlConv* c) { delete c; }
void run_dnnl_conv(DnnlConv&, const float*, int64_t, int64_t, float*, bool, bool) {
  fail("conv2d", "this build has no oneDNN");
}

#endif

}  // namespace lq::kernels
