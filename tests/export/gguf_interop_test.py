#!/usr/bin/env python3
"""Our GGUF export of lance-mini's und path, read by public tools.

1. `gguf` (PyPI, the reader llama.cpp ships as gguf-py): parses the file; the metadata llama.cpp's
   qwen3 loader needs is present; every tensor, dequantized by gguf.quants (an independent decoder
   of the Q4_0 / Q4_1 / Q4_K / Q5_K / Q6_K / IQ4_XS / Q8_0 / F16 block layouts), matches the source
   weight within the type's budget, and biases / norms are exact.
   Our decoders read the same bytes to the same floats, bit for bit: `lance-quant import` (the GGUF
   back into a dense checkpoint, our decoders) equals gguf-py's dequantization of every und tensor.
   Exports with calibration statistics (`--stats`, the und path calibrated on data/calib/text.txt)
   carry llama-quantize's per-tensor types for their file type (Q4_K_M: output Q6_K, attn_v and
   ffn_down of layers 2-3 Q6_K, ...), and their importance-weighted weight error is lower than that
   of the same type without statistics. With `--gptq` (GPTQ codes from the calibration X^T X) the files keep
   the same types and layout, and the linears' output error on the calibration rows is lower still.
2. A numpy evaluation of llama.cpp's `qwen3` graph (src/models/qwen3.cpp: RMSNorm, q/k/v with the
   optional biases, per-head q/k RMSNorm, NEOX RoPE, GQA attention, SwiGLU, output_norm, output),
   driven only by the GGUF's metadata and gguf-py-dequantized tensors, on the 4 golden und
   sequences: F16 logits within 1e-2 relative of ours; quantized types report KL(ours || export).
   This checks that the file defines the model; it is not llama.cpp itself.
3. llama.cpp (llama-cpp-python, opt-in: LQ_TEST_LLAMA_CPP=1 with `llama_cpp` installed in this
   python; building it from source takes longer than the test budget, see docs/exports.md): loads
   each export and runs the golden und sequences; its logits are compared with the golden logits,
   which our engine reproduces to ~1e-5 (tests/forward/und_golden_test.cpp). F16 must agree within
   1e-2 relative (max|a-b| / max|b|); quantized types report KL(ours || llama.cpp) per token.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import load_file
except ImportError as e:
    print("SKIP: gguf / safetensors not installed:", e)
    sys.exit(77)

EXE = os.environ.get("LQ_EXE")
MINI = os.path.join(os.environ.get("LQ_SHARED_DIR", ""), "fixtures", "lance-mini")
if not EXE or not os.path.isdir(MINI):
    print("SKIP: needs LQ_EXE and shared/fixtures/lance-mini")
    sys.exit(77)

LEN_TOKENIZER = 4263
# Per-element budget relative to the row's max |w|, per ggml tensor type (block-local bounds are
# tighter; this is a tensor-level ceiling that still catches a wrong layout, which gives O(1) errors).
BUDGET = {"F16": 1e-3, "Q8_0": 1e-2, "Q6_K": 0.08, "Q5_K": 0.12, "Q4_0": 0.2, "Q4_1": 0.2, "Q4_K": 0.2,
          "IQ4_XS": 0.25, "IQ4_NL": 0.25}
SOURCE = os.environ.get("LQ_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def export(out_root, typ, stats=None, gptq=False):
    out = os.path.join(out_root, typ + ("-stats" if stats else "") + ("-gptq" if gptq else ""))
    cmd = [EXE, "export", MINI, "--to", "gguf", "--path", "und", "--type", typ, "--out", out, "--force"]  # re-exports replace our own output
    if stats:
        cmd += ["--stats", stats]
    if gptq:
        cmd += ["--gptq"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out, "model.gguf")


def field(reader, key):
    return reader.fields[key].contents()


def check_with_gguf_py(path, typ, src, slack=1.0):
    # slack: importance-weighted searches may clip a weight of a column that calibration rarely drives.
    r = gguf.GGUFReader(path)
    assert field(r, "general.architecture") == "qwen3"
    for k, v in {"qwen3.block_count": 4, "qwen3.embedding_length": 256, "qwen3.attention.head_count": 4,
                 "qwen3.attention.head_count_kv": 2, "qwen3.attention.key_length": 64,
                 "qwen3.feed_forward_length": 768}.items():
        assert field(r, k) == v, (k, field(r, k))
    assert abs(field(r, "qwen3.rope.freq_base") - 1e6) < 1
    assert field(r, "tokenizer.ggml.model") == "gpt2" and field(r, "tokenizer.ggml.pre") == "qwen2"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == 4288 and tokens[4258] == "<|im_end|>", tokens[4258]
    assert field(r, "tokenizer.ggml.token_type")[4258] == 3  # CONTROL
    assert len(field(r, "tokenizer.ggml.merges")) == 4000
    names = {t.name: t for t in r.tensors}
    assert len(names) == 59, len(names)
    lance = "language_model.model.layers.{}."
    pairs = {"token_embd.weight": "language_model.model.embed_tokens.weight",
             "output.weight": "language_model.lm_head.weight",
             "output_norm.weight": "language_model.model.norm.weight"}
    for i in range(4):
        p = lance.format(i)
        pairs.update({f"blk.{i}.attn_q.weight": p + "self_attn.q_proj.weight",
                      f"blk.{i}.attn_q.bias": p + "self_attn.q_proj.bias",
                      f"blk.{i}.attn_k.bias": p + "self_attn.k_proj.bias",
                      f"blk.{i}.attn_v.weight": p + "self_attn.v_proj.weight",
                      f"blk.{i}.attn_q_norm.weight": p + "self_attn.q_norm.weight",
                      f"blk.{i}.attn_k_norm.weight": p + "self_attn.k_norm.weight",
                      f"blk.{i}.ffn_down.weight": p + "mlp.down_proj.weight",
                      f"blk.{i}.ffn_norm.weight": p + "post_attention_layernorm.weight"})
    worst = 0.0
    for g, s in pairs.items():
        t = names[g]
        ref = src[s]
        got = dequantize(t.data, t.tensor_type).reshape(ref.shape).astype(np.float32)
        if ref.ndim == 1:
            assert np.array_equal(got, ref), g  # biases and norms stay f32
            continue
        rel = np.abs(got - ref).max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1e-30)
        budget = BUDGET[t.tensor_type.name] * slack
        assert rel.max() <= budget, (typ, g, t.tensor_type.name, rel.max())
        worst = max(worst, float(rel.max()))
    print(f"{typ}: gguf-py reads {len(names)} tensors; worst row-relative weight error {worst:.3g}")


def check_our_decoders(path, tmp, name):
    """`lance-quant import` decodes with our decoders: equal, bit for bit, to gguf-py's dequantization."""
    out = os.path.join(tmp, "imported-" + name)
    subprocess.run([EXE, "import", path, "--base", MINI, "--out", out], check=True, stdout=subprocess.DEVNULL)
    ours = load_file(os.path.join(out, "model.safetensors"))
    r = gguf.GGUFReader(path)
    lance = "language_model.model.layers.{}."
    names = {"token_embd.weight": "language_model.model.embed_tokens.weight",
             "output.weight": "language_model.lm_head.weight"}
    kinds = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(4):
        for g, h in kinds.items():
            names[f"blk.{i}.{g}.weight"] = lance.format(i) + h + ".weight"
    types = set()
    for t in r.tensors:
        if t.name not in names:
            continue
        ref = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(ours[names[t.name]].shape)
        assert np.array_equal(ref, ours[names[t.name]]), (name, t.name, t.tensor_type.name)
        types.add(t.tensor_type.name)
    print(f"{name}: our decoders == gguf-py on {len(names)} tensors ({', '.join(sorted(types))})")
    return types


def tensor_types(path):
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def importance_weighted_error(path, src, imp):
    """sum over the und linears of sum_ij imp_j (w_ij - w'_ij)^2 / sum_ij imp_j w_ij^2."""
    r = gguf.GGUFReader(path)
    num = den = 0.0
    for t in r.tensors:
        if not t.name.startswith("blk.") or len(t.shape) != 2:
            continue
        i, kind = int(t.name.split(".")[1]), t.name.split(".")[2]
        key = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}[kind]
        name = f"language_model.model.layers.{i}.{key}"
        ref = src[name + ".weight"].astype(np.float64)
        got = dequantize(t.data, t.tensor_type).reshape(ref.shape).astype(np.float64)
        num += float((imp[name][None, :] * (got - ref) ** 2).sum())
        den += float((imp[name][None, :] * ref ** 2).sum())
    return num / den


def output_error(path, src, xtx):
    """sum over the und linears of tr(dW H dW^T) / tr(W H W^T), H = the calibration X^T X: the squared
    error of the linears' outputs on the calibration rows, relative."""
    r = gguf.GGUFReader(path)
    num = den = 0.0
    for t in r.tensors:
        if not t.name.startswith("blk.") or len(t.shape) != 2:
            continue
        i, kind = int(t.name.split(".")[1]), t.name.split(".")[2]
        key = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}[kind]
        name = f"language_model.model.layers.{i}.{key}"
        ref = src[name + ".weight"].astype(np.float64)
        d = dequantize(t.data, t.tensor_type).reshape(ref.shape).astype(np.float64) - ref
        h = xtx[name].astype(np.float64).reshape(ref.shape[1], ref.shape[1])
        num += float(np.einsum("ij,jk,ik->", d, h, d))
        den += float(np.einsum("ij,jk,ik->", ref, h, ref))
    return num / den


def load_importance(stats_path):
    """Mean x^2 per input column of every linear from `calibrate`'s safetensors file."""
    st = load_file(stats_path)
    imp = {}
    for k, v in st.items():
        if k.endswith(".sum_sq"):
            base = k[: -len(".sum_sq")]
            imp[base] = v.astype(np.float64) / float(np.asarray(st[base + ".count"]).reshape(-1)[0])
    return imp


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def neox_rope(x, theta):
    # x [T, heads, d]; pairs (i, i + d/2), position = row index.
    t, _, d = x.shape
    inv = theta ** (-np.arange(0, d // 2) * 2.0 / d)
    ang = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


class GgufQwen3:
    """llama.cpp's qwen3 graph in numpy (float64), from the file alone."""

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        f = lambda k: field(r, "qwen3." + k)  # noqa: E731
        self.n_layer, self.n_head, self.n_kv = f("block_count"), f("attention.head_count"), f("attention.head_count_kv")
        self.hd, self.eps, self.theta = f("attention.key_length"), f("attention.layer_norm_rms_epsilon"), f("rope.freq_base")
        self.w = {}
        for t in r.tensors:
            shape = [int(x) for x in reversed(t.shape)]
            self.w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)

    def logits(self, ids):
        w, T = self.w, len(ids)
        x = w["token_embd.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for i in range(self.n_layer):
            g = lambda n: w[f"blk.{i}.{n}"]  # noqa: E731
            h = rms_norm(x, g("attn_norm.weight"), self.eps)
            q = (h @ g("attn_q.weight").T + g("attn_q.bias")).reshape(T, self.n_head, self.hd)
            k = (h @ g("attn_k.weight").T + g("attn_k.bias")).reshape(T, self.n_kv, self.hd)
            v = (h @ g("attn_v.weight").T + g("attn_v.bias")).reshape(T, self.n_kv, self.hd)
            q = neox_rope(rms_norm(q, g("attn_q_norm.weight"), self.eps), self.theta)
            k = neox_rope(rms_norm(k, g("attn_k_norm.weight"), self.eps), self.theta)
            rep = self.n_head // self.n_kv
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.hd) + mask
            o = np.einsum("hqk,khd->qhd", softmax(s), v).reshape(T, -1)
            x = x + o @ g("attn_output.weight").T
            h = rms_norm(x, g("ffn_norm.weight"), self.eps)
            a = h @ g("ffn_gate.weight").T
            x = x + ((a / (1 + np.exp(-a))) * (h @ g("ffn_up.weight").T)) @ g("ffn_down.weight").T
        return rms_norm(x, w["output_norm.weight"], self.eps) @ w["output.weight"].T


def compare_logits(name, paths, logits_of, seqs=(0, 1, 2, 3)):
    golden = load_file(os.path.join(MINI, "golden", "und_golden.safetensors"))
    results = {}
    for typ, path in paths.items():
        rels, kls = [], []
        for i in seqs:
            ids = golden[f"und.{i}.input_ids"]
            ref = golden[f"und.{i}.logits"].astype(np.float64)
            got = logits_of(path, ids)
            assert got.shape == ref.shape, (got.shape, ref.shape)
            rels.append(np.abs(got - ref).max() / np.abs(ref).max())
            p = softmax(ref[:, :LEN_TOKENIZER])
            q = softmax(got[:, :LEN_TOKENIZER])
            kls.append(float((p * (np.log(p) - np.log(q))).sum(axis=-1).mean()))
        print(f"{typ}: {name} logits vs ours: max rel error {max(rels):.3g}, mean KL {np.mean(kls):.3g} nats")
        results[typ] = (max(rels), float(np.mean(kls)))
    assert results["f16"][0] <= 1e-2, results["f16"]
    return results


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def llama_cpp_logits(path, ids):
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=512, logits_all=True, verbose=False, n_threads=2, n_batch=512)
    llm.reset()
    llm.eval(list(map(int, ids)))
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def main():
    src = load_file(os.path.join(MINI, "model.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {typ: export(tmp, typ) for typ in ("f16", "q8_0", "q4_0", "q4_k")}
        for typ, path in paths.items():
            check_with_gguf_py(path, typ, src)
        # Sequences 0-2 (148 tokens) keep the test short; the opt-in llama.cpp run uses all 4.
        compare_logits("numpy qwen3 graph", paths, lambda p, ids: GgufQwen3(p).logits(ids), seqs=(0, 1, 2))
        if os.environ.get("LQ_TEST_LLAMA_CPP") == "1":
            compare_logits("llama.cpp", paths, llama_cpp_logits)
        else:
            print("llama.cpp check not run (opt-in: LQ_TEST_LLAMA_CPP=1 with llama-cpp-python installed)")

        # With calibration statistics: every file type, decoded by gguf-py and by ours.
        stats = os.path.join(tmp, "stats.safetensors")
        subprocess.run([EXE, "calibrate", MINI, "--calib", "text:" + os.path.join(SOURCE, "data", "calib", "text.txt"),
                        "--seq-len", "256", "--max-tokens", "4096", "--allow-partial", "--hessian", "--out", stats],
                       check=True, stdout=subprocess.DEVNULL)
        seen = set()
        for typ in ("q4_0", "q4_1", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "iq4_xs"):
            path = export(tmp, typ, stats)
            check_with_gguf_py(path, typ, src, slack=2.0)
            seen |= check_our_decoders(path, tmp, typ)
        assert {"Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"} <= seen, seen
        seen |= check_our_decoders(paths["q8_0"], tmp, "q8_0")
        seen |= check_our_decoders(paths["f16"], tmp, "f16")

        # llama-quantize's mix (llama-quant.cpp) for 4 layers: use_more_bits picks layers 2 and 3.
        mix = tensor_types(os.path.join(tmp, "q4_k_m-stats", "model.gguf"))
        assert mix["output.weight"] == "Q6_K" and mix["token_embd.weight"] == "Q4_K", mix
        for i in range(4):
            want = "Q6_K" if i >= 2 else "Q4_K"
            assert mix[f"blk.{i}.attn_v.weight"] == want and mix[f"blk.{i}.ffn_down.weight"] == want, (i, mix)
            assert mix[f"blk.{i}.attn_q.weight"] == "Q4_K" and mix[f"blk.{i}.attn_q.bias"] == "F32"
        mix = tensor_types(os.path.join(tmp, "q4_k_s-stats", "model.gguf"))
        assert all(mix[f"blk.{i}.attn_v.weight"] == "Q5_K" for i in range(4)), mix  # i_attention_wv < 4
        assert mix["output.weight"] == "Q6_K" and mix["blk.0.ffn_down.weight"] == "Q4_K", mix

        # A quantized checkpoint whose grid Q4_0 holds (INT4 symmetric, group 32, scales that are f16 values)
        # is copied without re-rounding: gguf-py's dequantization equals the checkpoint's own (--dense-out).
        ck, dense = os.path.join(tmp, "rtn-g32-sym"), os.path.join(tmp, "rtn-g32-sym-dense")
        subprocess.run([EXE, "quantize", MINI, "--scheme", "rtn-int4", "--group-size", "32", "--sym", "--out", ck,
                        "--dense-out", dense], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = os.path.join(tmp, "exact-q4_0")
        note = subprocess.run([EXE, "export", ck, "--base", MINI, "--to", "gguf", "--type", "q4_0", "--out", out],
                              check=True, capture_output=True, text=True).stdout
        assert "copied exactly" in note, note
        deq = load_file(os.path.join(dense, "model.safetensors"))
        r = gguf.GGUFReader(os.path.join(out, "model.gguf"))
        exact = 0
        for t in r.tensors:
            if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2:
                i, kind = int(t.name.split(".")[1]), t.name.split(".")[2]
                key = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                       "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                       "ffn_down": "mlp.down_proj"}[kind]
                ref = deq[f"language_model.model.layers.{i}.{key}.weight"]
                got = dequantize(t.data, t.tensor_type).reshape(ref.shape)
                assert t.tensor_type.name == "Q4_0" and np.array_equal(got, ref), t.name
                exact += 1
        assert exact == 28, exact
        print(f"int4 g32 symmetric checkpoint -> Q4_0: {exact} linears bit-exact")
        # An asymmetric one does not fit Q4_1's f16 offsets: refused, or re-quantized from --original.
        ck = os.path.join(tmp, "rtn-g128")
        subprocess.run([EXE, "quantize", MINI, "--scheme", "rtn-int4", "--group-size", "128", "--out", ck],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bad = subprocess.run([EXE, "export", ck, "--base", MINI, "--to", "gguf", "--type", "q4_k_m", "--out",
                              os.path.join(tmp, "refused")], capture_output=True, text=True)
        assert bad.returncode != 0 and "--original" in bad.stderr, bad.stderr
        again = subprocess.run([EXE, "export", ck, "--base", MINI, "--to", "gguf", "--type", "q4_k_m", "--original", MINI,
                                "--stats", stats, "--out", os.path.join(tmp, "requant")], check=True,
                               capture_output=True, text=True).stdout
        assert "re-quantized from the original" in again, again
        same = tensor_types(os.path.join(tmp, "requant", "model.gguf"))
        assert same == tensor_types(os.path.join(tmp, "q4_k_m-stats", "model.gguf")), same

        # The statistics lower the importance-weighted error of the same file type.
        imp = load_importance(stats)
        for typ in ("q4_0", "q4_k_m", "iq4_xs"):
            plain = importance_weighted_error(export(tmp, typ), src, imp)
            weighted = importance_weighted_error(os.path.join(tmp, typ + "-stats", "model.gguf"), src, imp)
            print(f"{typ}: importance-weighted relative error {plain:.4g} without statistics, {weighted:.4g} with")
            assert weighted < 0.97 * plain, (typ, plain, weighted)  # measured: 0.94x (q4_0), 0.89x, 0.86x

        # GPTQ codes (--gptq, X^T X from calibrate --hessian): same tensor types and layout (gguf-py and our
        # decoders agree bit for bit), lower output error on the calibration rows than the searches alone.
        st = load_file(stats)
        xtx = {k[: -len(".xtx")]: v for k, v in st.items() if k.endswith(".xtx")}
        for typ in ("q4_0", "q4_k_m", "iq4_xs"):
            path = export(tmp, typ, stats, gptq=True)
            assert tensor_types(path) == tensor_types(os.path.join(tmp, typ + "-stats", "model.gguf")), typ
            check_our_decoders(path, tmp, typ + "-gptq")
            searched = output_error(os.path.join(tmp, typ + "-stats", "model.gguf"), src, xtx)
            gptq = output_error(path, src, xtx)
            print(f"{typ}: calibration output error {searched:.4g} with --stats, {gptq:.4g} with --stats --gptq")
            assert gptq < 0.85 * searched, (typ, searched, gptq)
        bad = subprocess.run([EXE, "export", MINI, "--to", "gguf", "--type", "q4_0", "--gptq", "--out",
                              os.path.join(tmp, "no-stats")], capture_output=True, text=True)
        assert bad.returncode != 0 and "--stats" in bad.stderr, bad.stderr


if __name__ == "__main__":
    main()
