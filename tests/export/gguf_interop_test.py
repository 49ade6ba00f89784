#!/usr/bin/env python3
"""Our GGUF export of lance-mini's und path, read by public tools.

1. `gguf` (PyPI, the reader llama.cpp ships as gguf-py): parses the file; the metadata llama.cpp's
   qwen3 loader needs is present; every tensor, dequantized by gguf.quants (an independent decoder
   of the Q4_0 / Q4_K / Q8_0 / F16 block layouts), matches the source weight within the type's
   budget, and biases / norms are exact.
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
# Per-element budget relative to the row's max |w| (block-local bounds are tighter; this is a
# tensor-level ceiling that still catches a wrong layout, which gives O(1) errors).
BUDGET = {"f16": 1e-3, "q8_0": 1e-2, "q4_0": 0.2, "q4_k": 0.2}


def export(out_root, typ):
    out = os.path.join(out_root, typ)
    subprocess.run([EXE, "export", MINI, "--to", "gguf", "--path", "und", "--type", typ, "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out, "model.gguf")


def field(reader, key):
    return reader.fields[key].contents()


def check_with_gguf_py(path, typ, src):
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
        budget = 1e-3 if g == "token_embd.weight" else BUDGET[typ]
        assert rel.max() <= budget, (typ, g, rel.max())
        worst = max(worst, float(rel.max()))
    print(f"{typ}: gguf-py reads {len(names)} tensors; worst row-relative weight error {worst:.3g}")


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


if __name__ == "__main__":
    main()
