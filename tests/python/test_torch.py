"""lance_quant.torch: QuantLinear against a dequantized reference, the custom op's registration, and the
drop-in check: our HF export of lance-mini's und path, loaded by transformers and patched with
patch_linears from our awq-int4 checkpoint, gives the logits of our engine on that checkpoint."""
import os

import numpy as np
import pytest
import torch

import lance_quant as lq
from lance_quant.torch import QuantLinear, names_match, patch_linears
from conftest import SOURCE_DIR, run_cli

torch.manual_seed(0)


def random_int4(out_f, in_f, g, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (out_f, in_f), dtype=np.uint8)
    scales = (rng.random((out_f, in_f // g), dtype=np.float32) * 0.02 + 0.001).astype(np.float32)
    zeros = rng.integers(0, 16, (out_f, in_f // g), dtype=np.uint8)
    w = (codes.astype(np.float32) - np.repeat(zeros, g, axis=1)) * np.repeat(scales, g, axis=1)
    return codes, scales, zeros, torch.from_numpy(w)


def test_quant_linear_matches_dequantized_reference():
    codes, scales, zeros, w = random_int4(96, 512, 64)
    bias = torch.randn(96)
    q = QuantLinear.from_int4(codes, scales, zeros, 64, bias)
    ref_lin = torch.nn.Linear(512, 96)
    with torch.no_grad():
        ref_lin.weight.copy_(w)
        ref_lin.bias.copy_(bias)
    for shape in [(1, 512), (2, 3, 512), (40, 512)]:
        x = torch.randn(*shape)
        y, ref = q(x), ref_lin(x)
        assert y.shape == ref.shape and y.dtype == torch.float32
        err = ((y - ref).norm() / ref.norm()).item()
        assert err < 1e-2, (shape, err)  # int8 activations up to 32 tokens (~0.5% RMS), f32 above
    xb = torch.randn(4, 512, dtype=torch.bfloat16)
    assert q(xb).dtype == torch.bfloat16
    assert "scheme=int4_asym" in repr(q) and "group_size=64" in repr(q)


def test_custom_op_is_registered_and_traceable():
    codes, scales, zeros, _ = random_int4(32, 128, 64, seed=1)
    q = QuantLinear.from_int4(codes, scales, zeros, 64)
    assert hasattr(torch.ops.lance_quant, "q4_linear")
    x = torch.randn(3, 128)
    torch.library.opcheck(torch.ops.lance_quant.q4_linear.default, (x, q._handle, 32),
                          test_utils=("test_schema", "test_faketensor"))
    compiled = torch.compile(q, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), q(x))
    if torch.cuda.is_available():
        with pytest.raises(lq.Error, match="only the CPU backend"):
            q(x.cuda())


def test_dlpack_without_copies(mini):
    """Torch tensors go into the kernels in place (DLPack), results come back as shared memory."""
    codes, scales, zeros, w = random_int4(16, 128, 64, seed=2)
    p = lq.PackedLinear.from_int4(codes, scales, zeros, 64)
    x = torch.randn(2, 128)
    y = torch.full((2, 16), float("nan"))
    p.apply(x, y)  # torch tensors passed directly: written in place
    assert torch.isfinite(y).all() and ((y - x @ w.T).norm() / (x @ w.T).norm()).item() < 1e-2
    model = lq.load(mini)
    lg = model.logits(np.asarray(model.tokenize("a dog"), np.int32))
    t = torch.from_dlpack(lg)
    assert t.data_ptr() == lg.__array_interface__["data"][0]  # the same buffer, no copy
    t[0, 0] = 123.0
    assert lg[0, 0] == 123.0


def test_names_match():
    assert names_match("model.layers.0.self_attn.q_proj", "language_model.model.layers.0.self_attn.q_proj")
    assert names_match("language_model.model.layers.0.mlp_moe_gen.up_proj",
                       "language_model.model.layers.0.mlp_moe_gen.up_proj")
    assert not names_match("model.layers.0.self_attn.q_proj", "language_model.model.layers.0.self_attn.q_proj_moe_gen")
    assert not names_match("model.layers.10.mlp.up_proj", "language_model.model.layers.0.mlp.up_proj")


@pytest.fixture(scope="module")
def awq_checkpoint(mini, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("awq") / "mini-awq")
    lq.set_num_threads(2)
    lq.quantize(mini, out, scheme="awq-int4", group_size=64,
                calib=[f"text:{os.path.join(SOURCE_DIR, 'data', 'calib', 'text.txt')}",
                       f"t2i:{os.path.join(mini, 'calib_prompts.txt')}"],
                max_tokens=1024, max_prompts=2, steps=4, awq_rows=256)
    return out


def test_patch_linears_on_hf_export_matches_engine(mini, exe, awq_checkpoint, tmp_path):
    """The issue's drop-in check (transformers' Qwen3 with attention_bias, our HF export, our checkpoint)."""
    from transformers import AutoModelForCausalLM

    hf = tmp_path / "hf"
    run_cli("export", awq_checkpoint, "--to", "hf", "--base", mini, "--out", hf)
    model = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    model.eval()
    report = patch_linears(model, awq_checkpoint)
    layers = lq.model_config(mini)["num_layers"]
    assert len(report["replaced"]) == 7 * layers  # every und linear; the gen twins have no module here
    assert len(report["unmatched_linears"]) == 7 * layers and all("_moe_gen" in n for n in report["unmatched_linears"])
    assert all(isinstance(model.get_submodule(n), QuantLinear) for n in report["replaced"])

    engine = lq.load(awq_checkpoint)
    ids = engine.tokenize("Once upon a time, there was a little girl named Lily. She loved to play outside.")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    ref = engine.logits(np.asarray(ids, dtype=np.int32))
    diff = np.abs(logits - ref).max()
    rel = diff / np.abs(ref).max()
    print(f"patched HF export vs engine: max |diff| {diff:.3g}, relative to max |logit| {rel:.3g}")
    assert rel < 1e-3 and diff < 1e-3 * max(1.0, np.abs(ref).max())
    assert (logits.argmax(-1) == ref.argmax(-1)).mean() == 1.0


class MiniLance(torch.nn.Module):
    """Module names of Lance's PyTorch model (both paths) with lance-mini's shapes."""

    def __init__(self, cfg):
        super().__init__()
        h, i, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
        qo, kv = cfg["num_heads"] * hd, cfg["num_kv_heads"] * hd
        lm = torch.nn.Module()
        lm.model = torch.nn.Module()
        lm.model.layers = torch.nn.ModuleList()
        for _ in range(cfg["num_layers"]):
            layer = torch.nn.Module()
            attn = torch.nn.Module()
            for suffix in ["", "_moe_gen"]:
                setattr(attn, "q_proj" + suffix, torch.nn.Linear(h, qo))
                setattr(attn, "k_proj" + suffix, torch.nn.Linear(h, kv))
                setattr(attn, "v_proj" + suffix, torch.nn.Linear(h, kv))
                setattr(attn, "o_proj" + suffix, torch.nn.Linear(qo, h, bias=False))
                mlp = torch.nn.Module()
                mlp.gate_proj = torch.nn.Linear(h, i, bias=False)
                mlp.up_proj = torch.nn.Linear(h, i, bias=False)
                mlp.down_proj = torch.nn.Linear(i, h, bias=False)
                setattr(layer, "mlp" + suffix, mlp)
                norm = torch.nn.Module()
                norm.weight = torch.nn.Parameter(torch.zeros(h))
                setattr(layer, "input_layernorm" + suffix, norm)
            layer.self_attn = attn
            lm.model.layers.append(layer)
        self.language_model = lm


def test_patch_linears_both_lance_paths(mini, awq_checkpoint):
    cfg = lq.model_config(mini)
    m = MiniLance(cfg)
    report = patch_linears(m, awq_checkpoint)
    assert len(report["replaced"]) == 14 * cfg["num_layers"] and report["unmatched_linears"] == []
    ck = lq.Checkpoint(awq_checkpoint)
    # AWQ-folded norms come from the checkpoint too.
    name = "language_model.model.layers.1.input_layernorm_moe_gen.weight"
    assert name in report["loaded"]
    assert torch.equal(m.get_parameter(name), torch.from_numpy(ck.read(name)))
    # Each replaced module computes the checkpoint's linear (dequantized weight + stored bias).
    for mod_name in ["language_model.model.layers.2.self_attn.v_proj_moe_gen", "language_model.model.layers.0.mlp.down_proj"]:
        mod = m.get_submodule(mod_name)
        x = torch.randn(64, mod.in_features)  # > 32 tokens: f32 activations
        w = torch.from_numpy(ck.dequantize(mod_name)).double()
        b = ck.read_bias(mod_name)
        ref = x.double() @ w.T + (0 if b is None else torch.from_numpy(b).double())
        err = ((mod(x).double() - ref).norm() / ref.norm()).item()
        assert err < 1e-5, (mod_name, err)
    with pytest.raises(lq.Error, match="no nn.Linear of the module matches"):
        patch_linears(torch.nn.Sequential(torch.nn.Linear(4, 4)), awq_checkpoint)
