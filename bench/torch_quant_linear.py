#!/usr/bin/env python3
"""Batch-1 speed of lance_quant.torch.QuantLinear against two PyTorch baselines, side by side.

  quantlinear   QuantLinear (INT4, our fused kernels through the lance_quant::q4_linear custom op)
  bf16          nn.Linear in bfloat16 (torch's CPU kernel) with the dequantized weight
  f32           nn.Linear in float32 with the dequantized weight (for context: torch's fastest CPU path)
  dequant-bf16  the original Python toolkit's approach (its WQLinear): the INT4 weight is kept packed
                (AutoAWQ-style int32 words, bf16 scales) and dequantized WHOLE to bf16 on every call,
                then multiplied (F.linear)

Weights: a cycle of Lance-shaped matrices (2048->11008 and 11008->2048, as gate/up and down) holding
>= --gib GiB of bf16 weights in total, so every call streams its weight from DRAM, not from a cache.
Each round runs every method once over the whole cycle (interleaved: machine drift hits all methods
alike; dequantize-then-matmul, which takes seconds per call, times --dequant-calls matrices of the cycle per
round, rotating); a method's time per call is the best round's mean. Ratios are reported from the same run.

Usage: python bench/torch_quant_linear.py [--threads 2] [--rounds 7] [--gib 1.0] [--group 64] [--json F]
Needs torch and the lance_quant package (`pip install .`).
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

import lance_quant as lq
from lance_quant.torch import QuantLinear

SHAPES = [(11008, 2048), (2048, 11008)]  # (out, in): gate/up, down


def pack_int32(codes):
    """[rows, cols] 4-bit codes -> [rows, cols / 8] int32 words, element j of a word in bits 4 j .. 4 j + 3."""
    c = codes.astype(np.uint32).reshape(codes.shape[0], -1, 8)
    words = np.zeros(c.shape[:2], dtype=np.uint32)
    for j in range(8):
        words |= c[:, :, j] << np.uint32(4 * j)
    return torch.from_numpy(words.view(np.int32))


class DequantLinear(torch.nn.Module):
    """Dequantize-then-matmul, as the original toolkit's WQLinear did on every forward: the INT4 weight stays
    packed (int32 words of 8 codes along the input axis, [out, in / 8]; zero points [out, in / group] as bytes;
    bf16 scales [out, in / group]) and is expanded whole to a bf16 [out, in] matrix on each call, then F.linear.
    ([out, in] is the faster orientation for torch's bf16 kernel here: AutoAWQ's [in, out] matmul took ~20x
    longer on this machine.)"""

    def __init__(self, codes, scales, zeros, group):
        super().__init__()
        self.group = group
        self.out_features, self.in_features = codes.shape
        self.qweight = pack_int32(codes)
        self.zeros = torch.from_numpy(zeros)
        self.scales = torch.from_numpy(scales).to(torch.bfloat16)
        self.shifts = torch.arange(0, 32, 4, dtype=torch.int32)

    def forward(self, x):
        q = ((self.qweight.unsqueeze(-1) >> self.shifts) & 15).to(torch.bfloat16)  # [out, in / 8, 8]
        q = q.view(self.out_features, -1, self.group)                               # [out, in / group, group]
        w = (q - self.zeros.to(torch.bfloat16).unsqueeze(-1)) * self.scales.unsqueeze(-1)
        return F.linear(x, w.view(self.out_features, self.in_features))


def make_weights(out_f, in_f, group, rng):
    codes = rng.integers(0, 16, (out_f, in_f), dtype=np.uint8)
    zeros = rng.integers(4, 12, (out_f, in_f // group), dtype=np.uint8)
    # bf16-exact scales (what our checkpoints store).
    s = torch.from_numpy(rng.random((out_f, in_f // group), dtype=np.float32) * 0.01 + 0.001)
    scales = s.to(torch.bfloat16).float().numpy()
    return codes, scales, zeros


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--dequant-calls", type=int, default=4,
                    help="dequantize-then-matmul takes seconds per call here: each round times this many of its "
                         "matrices, rotating through the cycle")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lq.set_num_threads(a.threads)
    rng = np.random.default_rng(0)

    per_cycle = sum(o * i * 2 for o, i in SHAPES)
    cycles = max(1, int(np.ceil(a.gib * (1 << 30) / per_cycle)))
    mats = {"quantlinear": [], "bf16": [], "f32": [], "dequant-bf16": []}
    for c in range(cycles):
        for out_f, in_f in SHAPES:
            codes, scales, zeros = make_weights(out_f, in_f, a.group, rng)
            mats["quantlinear"].append(QuantLinear.from_int4(codes, scales, zeros, a.group))
            lin = torch.nn.Linear(in_f, out_f, bias=False, dtype=torch.bfloat16)
            w = (torch.from_numpy(codes).float() - torch.from_numpy(np.repeat(zeros, a.group, 1)).float()) * \
                torch.from_numpy(np.repeat(scales, a.group, 1))
            with torch.no_grad():
                lin.weight.copy_(w.to(torch.bfloat16))
            mats["bf16"].append(lin)
            lin32 = torch.nn.Linear(in_f, out_f, bias=False)
            with torch.no_grad():
                lin32.weight.copy_(w)
            mats["f32"].append(lin32)
            mats["dequant-bf16"].append(DequantLinear(codes, scales, zeros, a.group))
    n = len(mats["bf16"])
    gib_bf16 = n / len(SHAPES) * per_cycle / (1 << 30)
    gib_q = sum(m.packed.weight_bytes for m in mats["quantlinear"]) / (1 << 30)
    xs = {i: torch.randn(1, i) for _, i in SHAPES}
    xs_bf16 = {i: x.to(torch.bfloat16) for i, x in xs.items()}

    # Correctness on the first matrices: all three compute the same linear.
    with torch.no_grad():
        for k in range(len(SHAPES)):
            x = xs[mats["bf16"][k].in_features]
            ref = mats["bf16"][k](x.to(torch.bfloat16)).float()
            for name in ("quantlinear", "f32", "dequant-bf16"):
                xin = x if name in ("quantlinear", "f32") else x.to(torch.bfloat16)
                y = mats[name][k](xin).float()
                err = ((y - ref).norm() / ref.norm()).item()
                assert err < 2e-2, (name, err)

    best = {k: float("inf") for k in mats}
    with torch.inference_mode():
        for r in range(a.rounds):
            for name, mods in mats.items():
                if name == "dequant-bf16":
                    k = min(a.dequant_calls, len(mods))
                    mods = [mods[(r * k + i) % len(mods)] for i in range(k)]
                t0 = time.perf_counter()
                for m in mods:
                    m(xs[m.in_features] if name in ("quantlinear", "f32") else xs_bf16[m.in_features])
                best[name] = min(best[name], (time.perf_counter() - t0) / len(mods))
    res = {
        "threads": a.threads, "rounds": a.rounds, "group": a.group, "matrices": n, "shapes": SHAPES,
        "bf16_weight_gib": round(gib_bf16, 3), "int4_weight_gib": round(gib_q, 3), "kernel_path": lq.kernel_path(),
        "us_per_call": {k: round(v * 1e6, 1) for k, v in best.items()},
        "speedup_vs_bf16": round(best["bf16"] / best["quantlinear"], 2),
        "speedup_vs_dequant": round(best["dequant-bf16"] / best["quantlinear"], 2),
        "speedup_vs_f32": round(best["f32"] / best["quantlinear"], 2),
        "torch": torch.__version__,
    }
    print(f"batch 1, {a.threads} threads, {n} matrices ({gib_bf16:.2f} GiB bf16, {gib_q:.2f} GiB packed INT4 g{a.group}), "
          f"best of {a.rounds} interleaved rounds, mean per call:")
    for k, v in best.items():
        print(f"  {k:13s} {v * 1e6:9.1f} us")
    print(f"QuantLinear: {res['speedup_vs_bf16']}x bf16 nn.Linear, {res['speedup_vs_dequant']}x dequantize-then-matmul, "
          f"{res['speedup_vs_f32']}x f32 nn.Linear")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
