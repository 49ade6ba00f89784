"""Core ML export of Lance's understanding path, built with coremltools' MIL builder from our own weights.

    python -m lance_quant.coreml MODEL --out DIR.mlpackage [--path und] [--type int4|int8|f16]
                                  [--max-context 2048] [--base DIR]
    lance-quant export MODEL --to coreml ...      (the CLI runs this module; it needs this package + coremltools)

The weights are read through the package's C++ bindings (lance_quant.Checkpoint: any checkpoint lance-quant
reads), and the graph is written op by op (no tracing of a PyTorch model, which is how the original toolkit
lost Lance's q/k norms). What it computes per decoder layer, as Lance's und path does on text:

    h = RMSNorm(x) (fp32)        q, k, v = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv
    q, k = per-head RMSNorm(q), RMSNorm(k) (fp32, separate q_norm / k_norm weights)
    q, k = M-RoPE(q, k): theta from llm_config.json, frequency j uses position axis t, h or w by
           mrope_section (a const [3, head_dim/2] selection mask), half-split rotation
    K, V appended to the layer's KV-cache state at the current position, then repeated from
           num_key_value_heads to num_attention_heads (GQA)
    o = softmax(q K^T / sqrt(head_dim) + causal_mask) V ; x += o Wo^T
    x += down(silu(gate(RMSNorm(x))) * up(RMSNorm(x)))
then the final RMSNorm and the untied lm_head (its own weight, not the embedding).

Model interface (iOS 18 / macOS 15 ML Program, stateful):
  inputs   input_ids    int32 [1, S]                S tokens of this call (1 <= S <= max_context)
           position_ids int32 [3, S]                (t, h, w) positions; text: three equal rows P, P+1, ...
           causal_mask  fp16  [1, 1, S, P + S]      additive: 0 where key j <= P + i, -inf elsewhere
  states   key_cache_{l}, value_cache_{l}  fp16 [1, num_key_value_heads, max_context, head_dim]
  output   logits       fp32  [1, S, vocab_size]
P (tokens already in the cache) is the mask's width minus S; the call writes its K/V at P .. P+S-1.

Weights: --type int4 writes each INT4 linear of an INT4 checkpoint as constexpr_blockwise_shift_scale
(data = our 4-bit codes, offset = our zero points, scale = our scales, blocks [1, group]): Core ML's
blockwise linear quantization is w = scale * (data - offset), exactly ours, so nothing is re-quantized.
Scales are stored as fp16 when every scale of the matrix is exact in fp16, else as fp32 (the constexpr then
yields fp32 and a cast feeds the fp16 graph). int8 does the same for INT8 checkpoints. f16 writes every
linear dequantized (or dense) as fp16. Embedding, lm_head and biases are fp16; norm weights stay fp32.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Callable, Dict, Optional

import numpy as np

from . import _core

KINDS_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
KINDS_MLP = ("gate_proj", "up_proj", "down_proj")


def _ct():
    try:
        import coremltools as ct  # noqa: F401
        from coremltools.converters.mil import Builder as mb  # noqa: F401
        return ct
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise _core.Error("[coreml] the Core ML export needs coremltools (pip install coremltools, or "
                          "pip install '.[coreml]')") from e


class _Weights:
    """Our tensors of the und path, by role, read through the C++ bindings."""

    def __init__(self, model_dir: str, base_dir: Optional[str]):
        self.ck = _core.Checkpoint(model_dir)
        cfg_dir = model_dir
        for f in ("llm_config.json", "config.json"):
            if os.path.exists(os.path.join(model_dir, f)):
                break
        else:
            if not base_dir:
                raise _core.Error(f"[coreml] {model_dir} has no llm_config.json / config.json: pass --base DIR")
            cfg_dir = base_dir
        self.cfg = _core.model_config(cfg_dir)
        # The ViT (vit_model.*, dense or 4-bit from `quantize --vit`) is not part of the exported text decoder.
        self.quantized = {d["name"]: d for d in self.ck.quantized_linears() if not d["name"].startswith("vit_model.")}
        vit_q = [d for d in self.ck.quantized_linears() if d["name"].startswith("vit_model.")]
        self.vit_quantized = len(vit_q)
        self.plain = set(self.ck.tensor_names())
        # The ViT's tensors as it names them (a quantized linear's weight and bias count as two).
        self.vit_tensors = sum(n.startswith("vit_model.") for n in self.plain) + sum(1 + bool(d["has_bias"]) for d in vit_q)
        prefixes = ["language_model.model.", "model."]
        self.prefix = next((p for p in prefixes if p + "embed_tokens.weight" in self.plain), None)
        if self.prefix is None:
            raise _core.Error(f"[coreml] {model_dir}: no embed_tokens.weight under {prefixes}")
        head = [n for n in ("language_model.lm_head.weight", "lm_head.weight") if n in self.plain]
        if not head:
            raise _core.Error(f"[coreml] {model_dir}: no lm_head.weight (Lance's head is untied; it must be stored)")
        self.head_name = head[0]

    def linear_name(self, layer: int, kind: str) -> str:
        sub = "self_attn" if kind in KINDS_ATTN else "mlp"
        return f"{self.prefix}layers.{layer}.{sub}.{kind}"

    def tensor(self, name: str) -> np.ndarray:
        if name not in self.plain:
            raise _core.Error(f"[coreml] missing tensor {name}")
        return self.ck.read(name)

    def bias(self, base: str) -> Optional[np.ndarray]:
        return self.ck.read_bias(base)


def _scale_dtype(scales: np.ndarray):
    """fp16 when every scale is exactly an fp16 value, else fp32."""
    s16 = scales.astype(np.float16)
    return np.float16 if np.array_equal(s16.astype(np.float32), scales) and np.isfinite(s16).all() else np.float32


def default_type(weights: _Weights) -> str:
    schemes = {d["scheme"] for d in weights.quantized.values()}
    if schemes and schemes <= {"int4_asym", "int4_sym"}:
        return "int4"
    if schemes == {"int8_sym"}:
        return "int8"
    return "f16"


def build_program(weights: _Weights, wtype: str, max_context: int, progress: Optional[Callable] = None):
    """The MIL program of the und path (see the module docstring)."""
    ct = _ct()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol, types

    c = weights.cfg
    H, nH, nKV, hd = c["hidden_size"], c["num_heads"], c["num_kv_heads"], c["head_dim"]
    L, V, eps = c["num_layers"], c["vocab_size"], float(c["rms_norm_eps"])
    if nH % nKV:
        raise _core.Error(f"[coreml] {nH} attention heads are not a multiple of {nKV} KV heads")
    group = nH // nKV
    half = hd // 2
    sections = list(c["mrope_section"])
    if sum(sections) == 0:
        sections = [half, 0, 0]  # plain RoPE: every frequency on the first axis
    if sum(sections) != half:
        raise _core.Error(f"[coreml] mrope_section {sections} does not cover head_dim / 2 = {half}")
    inv_freq = (float(c["rope_theta"]) ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)).astype(np.float32)
    sel = np.zeros((3, 1, half), dtype=np.float32)
    j = 0
    for axis, n in enumerate(sections):
        sel[axis, 0, j:j + n] = 1.0
        j += n
    u4 = types.np_uint4_dtype

    def weight(layer, kind, name):
        base = weights.linear_name(layer, kind)
        d = weights.quantized.get(base)
        if wtype == "f16":
            w = weights.ck.dequantize(base) if d else weights.tensor(base + ".weight")
            return mb.const(val=w.astype(np.float16), name=name + "_weight")
        if d is None:
            raise _core.Error(f"[coreml] --type {wtype}: {base} is not quantized in this checkpoint (quantize it "
                              "with lance-quant quantize, or export --type f16)")
        q = weights.ck.read_quantized(base)
        if wtype == "int4" and q["scheme"] not in ("int4_asym", "int4_sym"):
            raise _core.Error(f"[coreml] --type int4: {base} is {q['scheme']}, not INT4 (NVFP4 has no Core ML "
                              "affine equivalent: export --type f16)")
        if wtype == "int8" and q["scheme"] != "int8_sym":
            raise _core.Error(f"[coreml] --type int8: {base} is {q['scheme']}, not INT8")
        data_dtype = u4 if wtype == "int4" else np.uint8
        sdt = _scale_dtype(q["scales"])
        w = mb.constexpr_blockwise_shift_scale(data=q["codes"].astype(data_dtype), scale=q["scales"].astype(sdt),
                                               offset=q["zeros"].astype(data_dtype), name=name + "_weight")
        if sdt != np.float16:
            w = mb.cast(x=w, dtype="fp16", name=name + "_weight_fp16")
        return w

    def linear(x, layer, kind, name, with_bias):
        w = weight(layer, kind, name)
        b = weights.bias(weights.linear_name(layer, kind)) if with_bias else None
        if with_bias and b is None:
            raise _core.Error(f"[coreml] {weights.linear_name(layer, kind)} has no bias (Lance's q/k/v have one)")
        if b is not None:
            return mb.linear(x=x, weight=w, bias=b.astype(np.float16), name=name)
        return mb.linear(x=x, weight=w, name=name)

    def rms_norm(x, w, name):
        """x * rsqrt(mean(x^2) + eps) * w over the last axis, in fp32 (weights kept in fp32)."""
        x32 = mb.cast(x=x, dtype="fp32", name=name + "_in_fp32")
        ms = mb.reduce_mean(x=mb.mul(x=x32, y=x32, name=name + "_square"), axes=[-1], keep_dims=True,
                            name=name + "_mean_square")
        r = mb.rsqrt(x=ms, epsilon=eps, name=name + "_rsqrt")
        y = mb.mul(x=mb.mul(x=x32, y=r, name=name + "_normalized"), y=w.astype(np.float32), name=name + "_scaled")
        return mb.cast(x=y, dtype="fp16", name=name)

    def rope(x, cos, sin, name):
        """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x[..., half:], x[..., :half]]."""
        x1 = mb.slice_by_index(x=x, begin=[0, 0, 0, 0], end=[0, 0, 0, half], end_mask=[True, True, True, False],
                               name=name + "_x1")
        x2 = mb.slice_by_index(x=x, begin=[0, 0, 0, half], end=[0, 0, 0, hd], end_mask=[True, True, True, True],
                               name=name + "_x2")
        rot = mb.concat(values=[mb.mul(x=x2, y=np.float16(-1), name=name + "_neg_x2"), x1], axis=-1,
                        name=name + "_rotate_half")
        return mb.add(x=mb.mul(x=x, y=cos, name=name + "_cos"), y=mb.mul(x=rot, y=sin, name=name + "_sin"), name=name)

    S, T = get_new_symbol(), get_new_symbol()
    specs = [mb.TensorSpec((1, S), dtype=types.int32), mb.TensorSpec((3, S), dtype=types.int32),
             mb.TensorSpec((1, 1, S, T), dtype=types.fp16)]
    for _ in range(L):
        specs.append(mb.StateTensorSpec((1, nKV, max_context, hd), dtype=types.fp16))
        specs.append(mb.StateTensorSpec((1, nKV, max_context, hd), dtype=types.fp16))

    def body(input_ids, position_ids, causal_mask, *caches):
        embed = weights.tensor(weights.prefix + "embed_tokens.weight").astype(np.float16)
        x = mb.gather(x=embed, indices=input_ids, axis=0, name="embed_tokens")  # [1, S, H]
        # M-RoPE: angle[s, j] = sum_axis sel[axis, j] * position[axis, s] * inv_freq[j]
        pos = mb.expand_dims(x=mb.cast(x=position_ids, dtype="fp32", name="rope_positions"), axes=[-1],
                             name="rope_positions_col")  # [3, S, 1]
        ang3 = mb.mul(x=pos, y=mb.const(val=inv_freq.reshape(1, 1, half), name="rope_inv_freq"), name="rope_angles_3d")
        ang = mb.reduce_sum(x=mb.mul(x=ang3, y=mb.const(val=sel, name="rope_mrope_section_select"),
                                     name="rope_angles_selected"), axes=[0], keep_dims=False, name="rope_angles")
        emb = mb.concat(values=[ang, ang], axis=-1, name="rope_angles_full")  # [S, hd]
        cos = mb.cast(x=mb.expand_dims(x=mb.cos(x=emb, name="rope_cos_fp32"), axes=[0, 1], name="rope_cos_4d"),
                      dtype="fp16", name="rope_cos")
        sin = mb.cast(x=mb.expand_dims(x=mb.sin(x=emb, name="rope_sin_fp32"), axes=[0, 1], name="rope_sin_4d"),
                      dtype="fp16", name="rope_sin")
        # Cache positions: this call writes rows [past, end) with end = the mask's width.
        end = mb.gather(x=mb.shape(x=causal_mask, name="mask_shape"), indices=3, axis=0, name="cache_end")
        seq = mb.gather(x=mb.shape(x=input_ids, name="ids_shape"), indices=1, axis=0, name="seq_len")
        past = mb.sub(x=end, y=seq, name="cache_past")
        zero3 = np.zeros(3, dtype=np.int32)
        begin = mb.concat(values=[zero3[:2], mb.expand_dims(x=past, axes=[0], name="cache_past_1d"), zero3[:1]],
                          axis=0, name="cache_write_begin")
        end_w = mb.concat(values=[np.array([1, nKV], np.int32), mb.expand_dims(x=end, axes=[0], name="cache_end_1d"),
                                  np.array([hd], np.int32)], axis=0, name="cache_write_end")
        read_end = end_w
        scale = np.float16(1.0 / math.sqrt(hd))
        for l in range(L):
            p = f"layers_{l}_"
            pre = weights.prefix + f"layers.{l}."
            h = rms_norm(x, weights.tensor(pre + "input_layernorm.weight"), p + "input_layernorm")
            q = linear(h, l, "q_proj", p + "q_proj", True)
            k = linear(h, l, "k_proj", p + "k_proj", True)
            v = linear(h, l, "v_proj", p + "v_proj", True)
            q = mb.reshape(x=q, shape=[1, -1, nH, hd], name=p + "q_heads")
            k = mb.reshape(x=k, shape=[1, -1, nKV, hd], name=p + "k_heads")
            v = mb.reshape(x=v, shape=[1, -1, nKV, hd], name=p + "v_heads")
            q = rms_norm(q, weights.tensor(pre + "self_attn.q_norm.weight"), p + "q_norm")
            k = rms_norm(k, weights.tensor(pre + "self_attn.k_norm.weight"), p + "k_norm")
            q = mb.transpose(x=q, perm=[0, 2, 1, 3], name=p + "q_bhsd")
            k = mb.transpose(x=k, perm=[0, 2, 1, 3], name=p + "k_bhsd")
            v = mb.transpose(x=v, perm=[0, 2, 1, 3], name=p + "v_bhsd")
            q = rope(q, cos, sin, p + "q_rope")
            k = rope(k, cos, sin, p + "k_rope")
            kv = []
            for which, new, state in (("key", k, caches[2 * l]), ("value", v, caches[2 * l + 1])):
                cache = mb.read_state(input=state, name=p + which + "_cache_read")
                cache = mb.slice_update(x=cache, update=new, begin=begin, end=end_w, name=p + which + "_cache_write")
                mb.coreml_update_state(state=state, value=cache, name=p + which + "_cache_update")
                cur = mb.slice_by_index(x=cache, begin=np.zeros(4, np.int32), end=read_end, name=p + which + "_cached")
                # GQA: every KV head serves `group` query heads: [1, nKV, T, hd] -> [1, nH, T, hd]
                rep = mb.tile(x=mb.expand_dims(x=cur, axes=[2], name=p + which + "_gqa_expand"),
                              reps=[1, 1, group, 1, 1], name=p + which + "_gqa_repeat")
                kv.append(mb.reshape(x=rep, shape=[1, nH, -1, hd], name=p + which + "_gqa"))
            scores = mb.matmul(x=q, y=kv[0], transpose_y=True, name=p + "attn_scores")
            scores = mb.add(x=mb.mul(x=scores, y=scale, name=p + "attn_scaled"), y=causal_mask, name=p + "attn_masked")
            probs = mb.softmax(x=mb.cast(x=scores, dtype="fp32", name=p + "attn_scores_fp32"), axis=-1,
                               name=p + "attn_softmax")
            o = mb.matmul(x=mb.cast(x=probs, dtype="fp16", name=p + "attn_probs"), y=kv[1], name=p + "attn_out")
            o = mb.reshape(x=mb.transpose(x=o, perm=[0, 2, 1, 3], name=p + "attn_out_bshd"), shape=[1, -1, nH * hd],
                           name=p + "attn_out_flat")
            x = mb.add(x=x, y=linear(o, l, "o_proj", p + "o_proj", False), name=p + "attn_residual")
            h = rms_norm(x, weights.tensor(pre + "post_attention_layernorm.weight"), p + "post_attention_layernorm")
            g = linear(h, l, "gate_proj", p + "gate_proj", False)
            u = linear(h, l, "up_proj", p + "up_proj", False)
            a = mb.mul(x=mb.silu(x=g, name=p + "mlp_silu"), y=u, name=p + "mlp_act")
            x = mb.add(x=x, y=linear(a, l, "down_proj", p + "down_proj", False), name=p + "mlp_residual")
            if progress:
                progress(l + 1, L, "coreml")
        xn = rms_norm(x, weights.tensor(weights.prefix + "norm.weight"), "final_norm")
        head = mb.const(val=weights.tensor(weights.head_name).astype(np.float16), name="lm_head_weight")
        logits = mb.linear(x=xn, weight=head, name="lm_head")
        return mb.cast(x=logits, dtype="fp32", name="logits")

    names = ["input_ids", "position_ids", "causal_mask"]
    for l in range(L):
        names += [f"key_cache_{l}", f"value_cache_{l}"]
    # mb.program needs a function with named parameters.
    src = f"def prog_fn({', '.join(names)}):\n    return body({', '.join(names)})\n"
    scope = {"body": body}
    exec(src, scope)  # noqa: S102 - a fixed signature built from our own names
    return mb.program(input_specs=specs, opset_version=ct.target.iOS18)(scope["prog_fn"]), names


def export(model_dir: str, out: str, *, wtype: Optional[str] = None, path: str = "und", max_context: int = 2048,
           base_dir: Optional[str] = None, force: bool = False, progress: Optional[Callable] = None) -> Dict:
    """Writes `out` (a .mlpackage directory) and returns a summary dict (also printed by the CLI with --json)."""
    ct = _ct()
    if path != "und":
        raise _core.Error(f"[coreml] only the und path can be exported ('{path}' has no standard architecture)")
    if not out.endswith(".mlpackage"):
        raise _core.Error(f"[coreml] --out must name a .mlpackage directory, got '{out}'")
    if os.path.exists(out) and not force:
        raise _core.Error(f"[coreml] {out} already exists (use --force to replace it)")
    if max_context < 2:
        raise _core.Error("[coreml] --max-context must be >= 2")
    weights = _Weights(model_dir, base_dir)
    wtype = wtype or default_type(weights)
    if wtype not in ("int4", "int8", "f16"):
        raise _core.Error(f"[coreml] --type must be int4, int8 or f16, got '{wtype}'")
    if max_context > weights.cfg["max_position_embeddings"]:
        raise _core.Error(f"[coreml] --max-context {max_context} exceeds max_position_embeddings "
                          f"{weights.cfg['max_position_embeddings']}")
    prog, names = build_program(weights, wtype, max_context, progress)
    inputs = [ct.TensorType(name="input_ids", shape=(1, ct.RangeDim(1, max_context)), dtype=np.int32),
              ct.TensorType(name="position_ids", shape=(3, ct.RangeDim(1, max_context)), dtype=np.int32),
              ct.TensorType(name="causal_mask", shape=(1, 1, ct.RangeDim(1, max_context), ct.RangeDim(1, max_context)),
                            dtype=np.float16)]
    import logging
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    mlmodel = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18, inputs=inputs,
                         compute_precision=ct.precision.FLOAT32,  # the graph sets its own fp16 / fp32 types
                         pass_pipeline=ct.PassPipeline.EMPTY,      # keep the ops exactly as written
                         skip_model_load=True)
    mlmodel.short_description = (f"Lance understanding path ({weights.cfg['num_layers']} layers), {wtype} weights "
                                 f"from {os.path.basename(os.path.abspath(model_dir))}, exported by lance-quant")
    meta = {"lance_quant.source": os.path.abspath(model_dir), "lance_quant.type": wtype,
            "lance_quant.max_context": str(max_context), "lance_quant.checkpoint_format": weights.ck.format,
            "lance_quant.rope_theta": repr(float(weights.cfg["rope_theta"])),
            "lance_quant.mrope_section": json.dumps(list(weights.cfg["mrope_section"]))}
    mlmodel.user_defined_metadata.update(meta)
    parent = os.path.dirname(os.path.abspath(out))
    tmp = tempfile.mkdtemp(prefix=".lq-coreml-", dir=parent)
    try:
        staged = os.path.join(tmp, os.path.basename(out))
        mlmodel.save(staged)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(staged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"out": out, "type": wtype, "layers": weights.cfg["num_layers"], "max_context": max_context,
           "inputs": names[:3], "states": names[3:], "checkpoint_format": weights.ck.format}
    if weights.vit_tensors or weights.vit_quantized:
        res["vit_not_exported"] = (f"the ViT (vit_model.*: {weights.vit_tensors} tensors"
                                   + (f", {weights.vit_quantized} of its linears 4-bit" if weights.vit_quantized else "")
                                   + ") is not exported: the Core ML program carries the und text decoder only")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lance_quant.coreml",
                                 description="Core ML (ML Program, iOS 18 / macOS 15) export of Lance's und path.")
    ap.add_argument("model", help="checkpoint directory (dense, or quantized by lance-quant)")
    ap.add_argument("--out", required=True, help="output DIR.mlpackage")
    ap.add_argument("--path", default="und")
    ap.add_argument("--type", dest="wtype", choices=["int4", "int8", "f16"], default=None,
                    help="weights: int4 / int8 from the checkpoint's codes (no re-quantization), f16 dense; "
                         "default: the checkpoint's INT format, else f16")
    ap.add_argument("--max-context", type=int, default=2048, help="KV-cache length (tokens)")
    ap.add_argument("--base", default=None, help="llm_config.json from here when MODEL has none")
    ap.add_argument("--force", action="store_true", help="replace an existing output")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        res = export(a.model, a.out, wtype=a.wtype, path=a.path, max_context=a.max_context, base_dir=a.base,
                     force=a.force)
    except _core.Error as e:
        print(f"lance-quant export: error: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(res))
    else:
        print(f"exported und path of {a.model} as Core ML ({res['type']} weights, {res['layers']} layers, "
              f"KV cache {res['max_context']} tokens) to {res['out']}")
        if "vit_not_exported" in res:
            print(f"  note: {res['vit_not_exported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
