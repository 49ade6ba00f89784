#!/usr/bin/env python3
"""Public packages decode the checkpoints our C++ writers produce to the weights our reader returns.

Mechanism: runs `$LQ_BINARY_DIR/test_formats --gtest_filter=InteropFiles.*` with LQ_INTEROP_OUT set;
that gtest writes one checkpoint per (format, scheme) case plus the expected f32 dequantization of
every linear (what our CheckpointReader returns) and of every plain tensor (see
tests/formats/checkpoint_test.cpp). Then, per case:

* compressed-tensors: QuantizationConfig parses our config.json; the registered compressor for the
  format (pack-quantized / nvfp4-pack-quantized) decompresses each linear; compared bit for bit in the
  output dtype the package produces (bf16/f16 for integer schemes: the exact f32 product rounded once;
  NVFP4: their scale / global_scale vs our block_scale * tensor_scale may differ by 1 f32 ulp).
* AutoAWQ (autoawq 0.2.9, deprecated): `dequantize_gemm` from awq/utils/packing_utils.py decodes our
  qweight/qzeros/scales; `WQLinear_GEMM.from_linear` re-packs our codes and must give identical int32
  tensors. The modules are imported without running awq/__init__.py (which needs `datasets` and
  transformers < 5 for unrelated model code).
* ModelOpt (nvidia-modelopt 0.47.0): NVFP4QTensor.dequantize (its reference path, fast=False) on our
  weight / weight_scale / weight_scale_2, bit for bit; without the package, the numpy decode below.
* lance-quant-v1: the original toolkit's runtime is not published, so it is decoded with numpy from
  the documented layout (shared/docs/formats.md section 2): an independent reimplementation, not a
  public tool.

The public packages need torch (~7 GB with its CUDA wheels from PyPI, 8-16 min to install here), so
they are NOT in tools/requirements-test.txt but in their own venv (tools/interop-venv.sh), which CI
(.ci/run) creates and passes as LQ_INTEROP_PYTHON; this test re-executes itself with that python.
Without LQ_INTEROP_PYTHON (a plain `make test`) it exits 77 (skipped) with that message.
"""
import json
import os
import subprocess
import sys
import tempfile


def skip(msg):
    print("SKIP:", msg)
    sys.exit(77)


def maybe_reexec():
    try:
        import torch  # noqa: F401
        import compressed_tensors  # noqa: F401
        return
    except ImportError:
        pass
    py = os.environ.get("LQ_INTEROP_PYTHON")
    # Venvs share the base interpreter binary, so compare the venv paths, and re-exec at most once.
    if py and not os.environ.get("LQ_INTEROP_REEXEC"):
        os.environ["LQ_INTEROP_REEXEC"] = "1"
        os.execv(py, [py] + sys.argv)
    skip("torch + compressed-tensors + autoawq are not installed; set LQ_INTEROP_PYTHON to a python "
         "that has them (tools/interop-venv.sh creates one)")


maybe_reexec()

import importlib.util  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def load_autoawq_modules():
    """awq.utils.packing_utils and awq.modules.linear.gemm without awq/__init__.py."""
    spec = importlib.util.find_spec("awq")
    if spec is None:
        return None, None
    root = os.path.dirname(spec.origin)
    for name, sub in [("awq", ""), ("awq.modules", "modules"), ("awq.modules.linear", "modules/linear")]:
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(root, sub)]
        sys.modules[name] = m
    import awq.utils.packing_utils as pu
    import awq.modules.linear.gemm as gemm
    return pu, gemm


def expected(case_dir, name, shape):
    return np.fromfile(os.path.join(case_dir, "expected", name + ".f32"), dtype=np.float32).reshape(shape)


def same_bits(a, b):
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def rounded(x, dtype):
    return torch.from_numpy(x).to(dtype).to(torch.float32).numpy()


class Checker:
    def __init__(self):
        self.failures = []
        self.checks = 0

    def expect(self, ok, what):
        self.checks += 1
        if not ok:
            self.failures.append(what)
            print("FAIL:", what)


def check_compressed_tensors(c, case_dir, case, sd):
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    qc = json.load(open(os.path.join(case_dir, "config.json")))["quantization_config"]
    cfg = QuantizationConfig.model_validate(qc)
    compressor = BaseCompressor.load_from_registry(cfg.format)
    for lin in case["linears"]:
        base, out, inn = lin["base"], lin["out"], lin["in"]
        scheme = next(g for g in cfg.config_groups.values() if base in g.targets)
        local = {k[len(base) + 1:]: v for k, v in sd.items() if k.startswith(base + ".")}
        local.pop("bias", None)
        w = compressor.decompress(local, scheme)["weight"]
        exp = expected(case_dir, base + ".weight", (out, inn))
        if lin["scheme"] == "nvfp4":
            # Their dequant: e2m1 * (fp32(scale) / global_scale), returned as bf16. Ours:
            # e2m1 * (e4m3 * tensor_scale) in f32. Compare at f32 through their dequantize() too.
            from compressed_tensors.quantization.lifecycle.forward import dequantize
            from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
            codes = unpack_fp4_from_uint8(local["weight_packed"], out, inn, dtype=torch.float32)
            f32 = dequantize(x_q=codes, scale=local["weight_scale"].to(torch.float32),
                             global_scale=local["weight_global_scale"], dtype=torch.float32).numpy()
            # s / g and s * t round differently (1 ulp), and the E2M1 multiply rounds again: <= 2 ulp.
            ulps = np.abs(f32 - exp) / np.maximum(np.spacing(np.abs(exp).astype(np.float32)), np.float32(1e-45))
            c.expect(np.all(ulps <= 2), f"{case['case']} {base}: CT NVFP4 f32 dequant within 2 ulp (max {ulps.max():.0f})")
            if lin["tensor_scale"] == 2.0 ** np.round(np.log2(lin["tensor_scale"])):
                c.expect(same_bits(f32, exp), f"{case['case']} {base}: power-of-two tensor scale: CT f32 dequant == ours bitwise")
            print(f"  {case['case']} {base}: CT f32 dequant == ours bitwise for {np.mean(f32 == exp):.2%} of elements, "
                  f"max {ulps.max():.0f} ulp")
            bf = w.to(torch.float32).numpy()
            c.expect(np.all(np.abs(bf - rounded(exp, torch.bfloat16)) <= np.spacing(np.abs(bf)) * 256),
                     f"{case['case']} {base}: CT NVFP4 bf16 output equals bf16(ours) up to 1 bf16 ulp")
        else:
            got = w.to(torch.float32).numpy()
            c.expect(same_bits(got, rounded(exp, w.dtype)),
                     f"{case['case']} {base}: CT {cfg.format} decompress == {w.dtype}(ours) bitwise")


def check_autoawq(c, case_dir, case, sd, pu, gemm):
    if pu is None:
        c.expect(False, "autoawq is not installed")
        return
    qc = json.load(open(os.path.join(case_dir, "config.json")))["quantization_config"]
    for lin in case["linears"]:
        base, out, inn, g = lin["base"], lin["out"], lin["in"], lin["group"]
        qw, qz, sc = sd[base + ".qweight"], sd[base + ".qzeros"], sd[base + ".scales"]
        exp = expected(case_dir, base + ".weight", (out, inn))
        # Exact: their unpack + reorder with fp32 arithmetic.
        wt = pu.dequantize_gemm(qw, qz, sc.to(torch.float32), 4, qc["group_size"])
        c.expect(same_bits(wt.t().numpy(), exp), f"{case['case']} {base}: AutoAWQ dequantize_gemm (f32 scales) == ours")
        # As AutoAWQ runs it: fp16.
        w16 = pu.dequantize_gemm(qw, qz, sc, 4, qc["group_size"])
        c.expect(w16.dtype == torch.float16 and same_bits(w16.t().float().numpy(), rounded(exp, torch.float16)),
                 f"{case['case']} {base}: AutoAWQ dequantize_gemm (fp16) == fp16(ours)")
        # Their packer on our codes gives our bytes. (from_linear sizes qweight as out // 32 * 4
        # columns, so it only packs widths that are multiples of 32; loading needs only out % 8.)
        if out % 32:
            print(f"  {case['case']} {base}: out={out} is not a multiple of 32, from_linear cannot pack it")
            continue
        iw, iz = pu.unpack_awq(qw, qz, 4)
        iw, iz = pu.reverse_awq_order(iw, iz, 4)
        zeros = torch.bitwise_and(iz, 15)[:, :].float()  # [in/g, out]
        linear = torch.nn.Linear(inn, out, bias=False)
        linear.weight.data = torch.from_numpy(exp.copy())
        packed = gemm.WQLinear_GEMM.from_linear(linear, 4, g, scales=sc.float(), zeros=zeros)
        c.expect(torch.equal(packed.qweight, qw) and torch.equal(packed.qzeros, qz),
                 f"{case['case']} {base}: WQLinear_GEMM.from_linear re-packs our codes to identical qweight/qzeros")
        if lin["has_bias"]:
            c.expect(sd[base + ".bias"].dtype == torch.float16, f"{case['case']} {base}: fp16 bias")


E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def e4m3_to_f32(b):
    b = b.astype(np.int32)
    s = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> 3) & 0xF
    m = b & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    return (s * v).astype(np.float32)


def nibbles(packed, out, inn):
    p = packed.numpy().astype(np.uint8)
    return np.stack([p & 15, p >> 4], axis=-1).reshape(out, inn)


def check_modelopt(c, case_dir, case, sd):
    try:
        from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor
    except ImportError:
        print("  nvidia-modelopt not importable: documented-layout decode only")
        return False
    for lin in case["linears"]:
        base, out, inn = lin["base"], lin["out"], lin["in"]
        q = NVFP4QTensor(torch.Size([out, inn]), torch.float32, sd[base + ".weight"])
        w = q.dequantize(dtype=torch.float32, fast=False, scale=sd[base + ".weight_scale"],
                         double_scale=sd[base + ".weight_scale_2"], block_sizes={-1: 16})
        # Equal values; ModelOpt's E2M1 table decodes nibble 8 (negative zero) as +0.0, so compare
        # values rather than bits.
        exp = expected(case_dir, base + ".weight", (out, inn))
        c.expect(np.array_equal(w.numpy(), exp), f"{case['case']} {base}: ModelOpt NVFP4QTensor.dequantize == ours")
        c.expect(same_bits(np.where(exp == 0, 0, w.numpy()), np.where(exp == 0, 0, exp)),
                 f"{case['case']} {base}: ModelOpt dequant == ours bitwise apart from the sign of zero")
    return True


def check_documented_layout(c, case_dir, case, sd):
    """numpy decode from formats.md (no public decoder available for these layouts)."""
    for lin in case["linears"]:
        base, out, inn, g = lin["base"], lin["out"], lin["in"], lin["group"]
        exp = expected(case_dir, base + ".weight", (out, inn))
        if case["format"] == "modelopt":
            codes = nibbles(sd[base + ".weight"].view(torch.uint8), out, inn)
            scale = e4m3_to_f32(sd[base + ".weight_scale"].view(torch.uint8).numpy())
            s2 = sd[base + ".weight_scale_2"]
            c.expect(s2.dim() == 0 and s2.dtype == torch.float32, f"{case['case']} {base}: weight_scale_2 fp32 scalar")
            eff = (scale * np.float32(s2.item())).astype(np.float32)
            got = E2M1[codes] * np.repeat(eff, 16, axis=1)
        elif lin["scheme"] == "nvfp4":  # lance-quant-v1: their runtime reads only scales_bf16
            codes = nibbles(sd[base + ".qweight"], out, inn)
            eff = sd[base + ".scales_bf16"].float().numpy()
            got = E2M1[codes] * np.repeat(eff, 16, axis=1)
        else:
            codes = nibbles(sd[base + ".qweight"], out, inn).astype(np.float32)
            s = np.repeat(sd[base + ".scales"].float().numpy(), g, axis=1)
            z = np.repeat(sd[base + ".zeros"].numpy().astype(np.float32), g, axis=1)
            got = (codes - z) * s
        c.expect(same_bits(got.astype(np.float32), exp), f"{case['case']} {base}: documented-layout decode == ours")


def main():
    bindir = os.environ.get("LQ_BINARY_DIR")
    if not bindir or not os.path.exists(os.path.join(bindir, "test_formats")):
        skip("LQ_BINARY_DIR/test_formats not built")
    pu, gemm = load_autoawq_modules()
    c = Checker()
    with tempfile.TemporaryDirectory(prefix="lq-interop-") as tmp:
        env = dict(os.environ, LQ_INTEROP_OUT=tmp)
        subprocess.run([os.path.join(bindir, "test_formats"), "--gtest_filter=InteropFiles.*"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        for case in json.load(open(os.path.join(tmp, "manifest.json"))):
            case_dir = os.path.join(tmp, case["case"])
            st = [f for f in os.listdir(case_dir) if f.endswith(".safetensors")][0]
            sd = load_file(os.path.join(case_dir, st))
            fmt = case["format"]
            if fmt == "compressed-tensors":
                check_compressed_tensors(c, case_dir, case, sd)
            elif fmt == "autoawq":
                check_autoawq(c, case_dir, case, sd, pu, gemm)
            else:
                if fmt == "modelopt":
                    check_modelopt(c, case_dir, case, sd)
                check_documented_layout(c, case_dir, case, sd)
            for name in case["plain"]:  # pass-through tensors, through safetensors' own loader
                exp = expected(case_dir, name, tuple(sd[name].shape))
                c.expect(same_bits(sd[name].float().numpy(), exp), f"{case['case']} plain {name}")
    from importlib.metadata import version
    vers = {}
    for p in ["torch", "compressed-tensors", "autoawq", "nvidia-modelopt", "safetensors"]:
        try:
            vers[p] = version(p)
        except Exception:
            vers[p] = "not installed"
    print("package versions:", vers)
    print(f"{c.checks - len(c.failures)} passed, {len(c.failures)} failed")
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
