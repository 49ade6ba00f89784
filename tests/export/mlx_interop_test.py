#!/usr/bin/env python3
"""The MLX export of an INT4 lance-mini, dequantized by MLX itself, equals our dequantized weights
bit for bit.

An asymmetric INT4 checkpoint (lance-quant-v1, group 64) is made with `lance-quant quantize`
(rtn-int4 here: the same storage as awq-int4, whose AWQ-folded weights are simply what the
checkpoint holds, and fast enough for a test). It is exported twice:
  * `--to mlx`: codes packed into uint32, scales and biases = -scale * zero (f32);
  * `--to hf`:  dense f32, i.e. our CheckpointReader's dequantization (QTensor::dequantize).
`mlx.core.dequantize(weight, scales, biases, group_size, bits)` of every quantized linear of the MLX
export must equal the HF export's weight exactly, and the config must describe an mlx-lm
`glm4_moe` model whose layers are all dense, with attention bias, q/k norm and an untied lm_head.
Without `mlx` (it has Linux CPU wheels: `mlx[cpu]`) the test exits 77.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import mlx.core as mx
    import numpy as np
    from safetensors.numpy import load_file
except ImportError as e:
    print("SKIP: mlx / safetensors not installed:", e)
    sys.exit(77)

EXE = os.environ.get("LQ_EXE")
MINI = os.path.join(os.environ.get("LQ_SHARED_DIR", ""), "fixtures", "lance-mini")
if not EXE or not os.path.isdir(MINI):
    print("SKIP: needs LQ_EXE and shared/fixtures/lance-mini")
    sys.exit(77)


def run(*args):
    subprocess.run([EXE, *args], check=True, stdout=subprocess.DEVNULL)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        q = os.path.join(tmp, "int4")
        run("quantize", MINI, "--out", q, "--scheme", "rtn-int4", "--group-size", "64")
        run("export", q, "--to", "mlx", "--path", "und", "--out", os.path.join(tmp, "mlx"))
        run("export", q, "--to", "hf", "--path", "und", "--out", os.path.join(tmp, "hf"))

        cfg = json.load(open(os.path.join(tmp, "mlx", "config.json")))
        assert cfg["model_type"] == "glm4_moe" and cfg["first_k_dense_replace"] == cfg["num_hidden_layers"]
        assert cfg["attention_bias"] and cfg["use_qk_norm"] and not cfg["tie_word_embeddings"]
        assert cfg["partial_rotary_factor"] == 1.0
        assert cfg["quantization"] == {"group_size": 64, "bits": 4}, cfg["quantization"]

        m = mx.load(os.path.join(tmp, "mlx", "model.safetensors"))
        dense = load_file(os.path.join(tmp, "hf", "model.safetensors"))
        quantized = [k[: -len(".scales")] for k in m if k.endswith(".scales")]
        assert len(quantized) == 4 * 7, quantized
        for base in quantized:
            w = np.array(mx.dequantize(m[base + ".weight"], m[base + ".scales"], m[base + ".biases"],
                                       group_size=64, bits=4))
            ref = dense[base + ".weight"]
            assert w.shape == ref.shape and np.array_equal(w, ref), (base, np.abs(w - ref).max())
        # Everything else passes through unchanged (norms, biases, embedding, lm_head).
        for k, v in dense.items():
            if k[: -len(".weight")] not in quantized:
                assert np.array_equal(np.array(m[k]), v), k
        print(f"mlx {mx.__version__}: {len(quantized)} quantized linears dequantize exactly to our weights")


if __name__ == "__main__":
    main()
