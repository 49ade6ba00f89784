"""Core ML export of lance-mini's und path (lance_quant.coreml through `lance-quant export --to coreml`).

* the package loads with coremltools (MLModel(..., skip_model_load=True)); its spec parses back into a MIL
  program (coremltools re-runs every op's type inference: the spec validates);
* every linear weight read back from the package equals our dequantized weight: 0 difference for int4 from
  our INT4 checkpoint (Core ML's blockwise shift-scale holds our codes, zero points and scales), fp16
  rounding for f16;
* the graph is walked per layer: q/k norms with our weights wired between the projections and RoPE, q/k/v
  biases (and none elsewhere), RoPE with Lance's theta and mrope sections, GQA from 2 KV-head cache states,
  an untied lm_head; the test fails if one is missing;
* the program is evaluated by a small numpy interpreter of the MIL ops it uses (prefill, then one decode
  step through the KV-cache states) against our engine's logits. Core ML itself cannot run on Linux: this
  checks what the graph says, not Apple's runtime.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lance_quant as lq
from conftest import EXE, run_cli

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def int4_ckpt(mini, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("q") / "mini-rtn")
    lq.set_num_threads(2)
    lq.quantize(mini, out, scheme="rtn-int4", group_size=64)
    return out


def export_cli(model, out, *extra):
    env = dict(os.environ, LQ_PYTHON=sys.executable)
    p = subprocess.run([EXE, "export", model, "--to", "coreml", "--out", out, "--max-context", "64", *extra],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def int4_package(int4_ckpt, exe, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cm") / "mini-int4.mlpackage")
    export_cli(int4_ckpt, out)
    return out


def load_program(path):
    m = ct.models.MLModel(path, skip_model_load=True)
    spec = m.get_spec()
    prog = milproto_load(spec, spec.specificationVersion, m.weights_dir)
    return m, spec, prog


def ops_by_name(prog):
    return {op.outputs[0].name: op for op in prog.functions["main"].operations}


def producer(ops, var):
    return var.op if var.op is not None else None


def test_package_loads_and_spec_validates(int4_package, mini):
    m, spec, prog = load_program(int4_package)
    cfg = lq.model_config(mini)
    assert spec.specificationVersion >= 9  # iOS 18 / macOS 15: ML Program with states
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["input_ids", "position_ids", "causal_mask"]
    assert [o.name for o in spec.description.output] == ["logits"]
    states = {s.name: list(s.type.stateType.arrayType.shape) for s in spec.description.state}
    assert len(states) == 2 * cfg["num_layers"]
    for name, shape in states.items():
        assert shape == [1, cfg["num_kv_heads"], 64, cfg["head_dim"]], name
    meta = dict(spec.description.metadata.userDefined)
    assert meta["lance_quant.type"] == "int4" and json.loads(meta["lance_quant.mrope_section"]) == cfg["mrope_section"]
    assert len(prog.functions["main"].operations) > 100


def test_int4_weights_read_back_exactly(int4_package, int4_ckpt, mini):
    _, _, prog = load_program(int4_package)
    ops = ops_by_name(prog)
    ck = lq.Checkpoint(int4_ckpt)
    n = 0
    for layer in range(lq.model_config(mini)["num_layers"]):
        for kind in KINDS:
            op = ops[f"layers_{layer}_{kind}_weight"]
            assert op.op_type == "constexpr_blockwise_shift_scale"
            data = op.data.val.astype(np.float32)
            offset = op.offset.val.astype(np.float32)
            scale = op.scale.val.astype(np.float32)
            g = data.shape[1] // scale.shape[1]
            w = np.repeat(scale, g, axis=1) * (data - np.repeat(offset, g, axis=1))
            sub = "self_attn" if kind in KINDS[:4] else "mlp"
            ours = ck.dequantize(f"language_model.model.layers.{layer}.{sub}.{kind}")
            assert w.shape == ours.shape and np.array_equal(w, ours), (layer, kind, np.abs(w - ours).max())
            assert g == 64 and op.data.val.dtype.metadata  # uint4 storage, blocks of our group size
            n += 1
    assert n == 28


def test_f16_weights_are_rounded_copies(mini, exe, tmp_path):
    out = str(tmp_path / "mini-f16.mlpackage")
    export_cli(mini, out, "--type", "f16")
    _, _, prog = load_program(out)
    ops = ops_by_name(prog)
    ck = lq.Checkpoint(mini)
    for layer in range(lq.model_config(mini)["num_layers"]):
        for kind in KINDS:
            sub = "self_attn" if kind in KINDS[:4] else "mlp"
            w = ops[f"layers_{layer}_{kind}_weight"].outputs[0].val
            ours = ck.read(f"language_model.model.layers.{layer}.{sub}.{kind}.weight")
            assert w.dtype == np.float16 and np.array_equal(w, ours.astype(np.float16))


def test_a_vit_in_the_checkpoint_is_left_out_with_a_note(mini, exe, tmp_path):
    """A checkpoint written by quantize --vit: the text decoder is exported in the LLM's own format (the
    4-bit ViT linears do not change the default type), and the ViT's absence is said, not silent."""
    vit = str(tmp_path / "vit")
    run_cli("synth", "--vit", "small", "--vit-out-hidden", "256", "--out", vit)
    ck_dir = str(tmp_path / "mini-int8-vit")
    lq.quantize(mini, ck_dir, scheme="rtn-int8", group_size=128, vit=True, vit_dir=vit)
    out = str(tmp_path / "mini-int8-vit.mlpackage")
    p = export_cli(ck_dir, out)
    assert "the ViT (vit_model.*: 54 tensors, 18 of its linears 4-bit) is not exported" in p.stdout, p.stdout
    _, spec, _ = load_program(out)
    assert dict(spec.description.metadata.userDefined)["lance_quant.type"] == "int8"


def test_int8_weights_read_back_exactly(mini, exe, tmp_path):
    ck_dir = str(tmp_path / "mini-int8")
    lq.quantize(mini, ck_dir, scheme="rtn-int8", group_size=128)
    out = str(tmp_path / "mini-int8.mlpackage")
    export_cli(ck_dir, out)  # default type: the checkpoint's INT8
    m, spec, prog = load_program(out)
    assert dict(spec.description.metadata.userDefined)["lance_quant.type"] == "int8"
    ops = ops_by_name(prog)
    ck = lq.Checkpoint(ck_dir)
    for kind in KINDS:
        sub = "self_attn" if kind in KINDS[:4] else "mlp"
        op = ops[f"layers_1_{kind}_weight"]
        d, s_, o = (op.data.val.astype(np.float32), op.scale.val.astype(np.float32), op.offset.val.astype(np.float32))
        g = d.shape[1] // s_.shape[1]
        w = np.repeat(s_, g, axis=1) * (d - np.repeat(o, g, axis=1))
        assert np.array_equal(w, ck.dequantize(f"language_model.model.layers.1.{sub}.{kind}")), kind


def consumers(prog):
    out = {}
    for op in prog.functions["main"].operations:
        for v in op.inputs.values():
            for x in (v if isinstance(v, (list, tuple)) else [v]):
                out.setdefault(x.name, []).append(op)
    return out


def feeds(ops, cons, src, dst, limit=12):
    """True when op `src`'s output reaches op `dst` through at most `limit` ops."""
    frontier, seen = [src], set()
    for _ in range(limit):
        nxt = []
        for name in frontier:
            for op in cons.get(name, []):
                out = op.outputs[0].name
                if out == dst:
                    return True
                if out not in seen:
                    seen.add(out)
                    nxt.append(out)
        frontier = nxt
    return False


def test_graph_has_every_part_of_the_und_layer(int4_package, int4_ckpt, mini):
    _, spec, prog = load_program(int4_package)
    ops, cons = ops_by_name(prog), consumers(prog)
    cfg = lq.model_config(mini)
    ck = lq.Checkpoint(int4_ckpt)
    nH, nKV, hd = cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"]

    # RoPE: Lance's theta and mrope sections, from the graph's constants.
    inv_freq = ops["rope_inv_freq"].outputs[0].val.reshape(-1)
    theta = float(inv_freq[1]) ** (-hd / 2)
    assert abs(theta / cfg["rope_theta"] - 1) < 1e-4, theta
    expect = (cfg["rope_theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)).astype(np.float32)
    assert np.array_equal(inv_freq, expect)
    sel = ops["rope_mrope_section_select"].outputs[0].val.reshape(3, -1)
    assert (sel.sum(0) == 1).all() and [int(s) for s in sel.sum(1)] == cfg["mrope_section"]
    assert (np.argmax(sel, 0) == np.repeat([0, 1, 2], cfg["mrope_section"])).all()  # t, h, w in order

    for l in range(cfg["num_layers"]):
        p = f"layers_{l}_"
        pre = f"language_model.model.layers.{l}."
        # q/k norms with our weights, between the projections and RoPE.
        for which in ("q", "k"):
            norm = ops[p + f"{which}_norm_scaled"]
            assert np.array_equal(norm.y.val, ck.read(pre + f"self_attn.{which}_norm.weight")), (l, which)
            assert feeds(ops, cons, p + f"{which}_proj", p + f"{which}_norm_scaled")
            assert feeds(ops, cons, p + f"{which}_norm_scaled", p + f"{which}_rope")
            rope = ops[p + f"{which}_rope"]
            assert feeds(ops, cons, "rope_cos", p + f"{which}_rope") and feeds(ops, cons, "rope_sin", p + f"{which}_rope")
            assert rope.op_type == "add"
        # The three biases, and none on o / MLP.
        for kind in KINDS:
            lin = ops[p + kind]
            assert lin.op_type == "linear"
            sub = "self_attn" if kind in KINDS[:4] else "mlp"
            bias = ck.read_bias(pre + f"{sub}.{kind}")
            if kind in ("q_proj", "k_proj", "v_proj"):
                assert bias is not None and np.array_equal(lin.bias.val, bias.astype(np.float16)), (l, kind)
                assert np.abs(bias).max() > 0
            else:
                assert bias is None and not np.any(lin.bias.val), (l, kind)
            assert lin.weight.op.outputs[0].name == p + kind + "_weight"
        # GQA: nKV cache heads repeated to nH query heads feed the attention products.
        for which in ("key", "value"):
            tile = ops[p + which + "_gqa_repeat"]
            assert list(tile.reps.val) == [1, 1, nH // nKV, 1, 1]
            state = ops[p + which + "_cache_read"].input
            assert list(state.shape) == [1, 2, 64, hd] and nKV == 2
        assert feeds(ops, cons, p + "key_gqa", p + "attn_scores") and feeds(ops, cons, p + "q_rope", p + "attn_scores")
        assert feeds(ops, cons, p + "value_gqa", p + "attn_out")
    # Untied head: its own weight, our lm_head, not the embedding.
    head = ops["lm_head"]
    w = head.weight.val
    assert head.weight.op.outputs[0].name == "lm_head_weight"
    assert np.array_equal(w, ck.read("language_model.lm_head.weight").astype(np.float16))
    emb = ops["embed_tokens"].x.val
    assert not np.array_equal(w, emb)
    assert feeds(ops, cons, "final_norm", "lm_head")


# ---- a numpy interpreter of the MIL ops the exporter writes ---------------------------------------


def _v(x, env):
    if x.name in env:
        return env[x.name]
    return x.val  # a constant (states are read by name below)


def run_program(prog, feeds_in, states):
    """Evaluates the main function: fp16-typed results are rounded to fp16 after each op."""
    env = dict(feeds_in)
    env.update({name: None for name in states})
    for op in prog.functions["main"].operations:
        t = op.op_type
        a = {k: (_v(v, env) if not isinstance(v, (list, tuple)) else [_v(x, env) for x in v])
             for k, v in op.inputs.items()}
        if t == "const":
            out = op.outputs[0].val
        elif t == "constexpr_blockwise_shift_scale":
            d, s, o = a["data"].astype(np.float32), a["scale"].astype(np.float32), a["offset"].astype(np.float32)
            g = d.shape[1] // s.shape[1]
            out = np.repeat(s, g, 1) * (d - np.repeat(o, g, 1))
        elif t == "gather":
            out = np.take(a["x"], a["indices"].astype(np.int64), axis=int(a["axis"]))
        elif t == "cast":
            out = a["x"].astype({"fp16": np.float16, "fp32": np.float32, "int32": np.int32}[a["dtype"]])
        elif t == "expand_dims":
            out = np.expand_dims(a["x"], tuple(int(i) for i in a["axes"]))
        elif t in ("mul", "add", "sub", "real_div"):
            x, y = np.asarray(a["x"], np.float32) if t != "sub" or a["x"].dtype.kind == "f" else a["x"], a["y"]
            out = {"mul": np.multiply, "add": np.add, "sub": np.subtract, "real_div": np.divide}[t](x, y)
        elif t in ("reduce_sum", "reduce_mean"):
            f = np.sum if t == "reduce_sum" else np.mean
            out = f(a["x"].astype(np.float32), axis=tuple(int(i) for i in a["axes"]), keepdims=bool(a["keep_dims"]))
        elif t == "rsqrt":
            out = 1.0 / np.sqrt(a["x"] + a["epsilon"])
        elif t == "concat":
            out = np.concatenate([np.asarray(v) for v in a["values"]], axis=int(a["axis"]))
        elif t in ("cos", "sin", "silu"):
            x = a["x"].astype(np.float32)
            out = np.cos(x) if t == "cos" else np.sin(x) if t == "sin" else x / (1 + np.exp(-x))
        elif t == "shape":
            out = np.array(a["x"].shape, dtype=np.int32)
        elif t == "linear":
            out = a["x"].astype(np.float32) @ a["weight"].astype(np.float32).T + a["bias"].astype(np.float32)
        elif t == "reshape":
            out = a["x"].reshape([int(i) for i in a["shape"]])
        elif t == "transpose":
            out = np.transpose(a["x"], [int(i) for i in a["perm"]])
        elif t == "slice_by_index":
            x = a["x"]
            b, e = list(a["begin"]), list(a["end"])
            em = a.get("end_mask")
            sl = tuple(slice(int(b[i]), x.shape[i] if em is not None and em[i] else int(e[i])) for i in range(x.ndim))
            out = x[sl]
        elif t == "read_state":
            out = states[op.inputs["input"].name].copy()
        elif t == "slice_update":
            out = a["x"].copy()
            out[tuple(slice(int(b), int(e)) for b, e in zip(a["begin"], a["end"]))] = a["update"]
        elif t in ("coreml_update_state", "write_state"):
            states[op.inputs["state" if t == "coreml_update_state" else "input"].name] = a["value" if "value" in a else "data"].copy()
            out = a.get("value")
        elif t == "tile":
            out = np.tile(a["x"], [int(i) for i in a["reps"]])
        elif t == "matmul":
            x, y = a["x"].astype(np.float32), a["y"].astype(np.float32)
            if a.get("transpose_x"):
                x = np.swapaxes(x, -1, -2)
            if a.get("transpose_y"):
                y = np.swapaxes(y, -1, -2)
            out = x @ y
        elif t == "softmax":
            x = a["x"] - a["x"].max(axis=int(a["axis"]), keepdims=True)
            e = np.exp(x)
            out = e / e.sum(axis=int(a["axis"]), keepdims=True)
        else:
            raise NotImplementedError(t)
        if out is not None and op.outputs:
            dt = op.outputs[0].dtype
            if dt == types.fp16:
                out = np.asarray(out).astype(np.float16)
            elif dt == types.fp32:
                out = np.asarray(out).astype(np.float32)
            env[op.outputs[0].name] = out
    return env["logits"]


def test_graph_computes_our_logits_with_a_kv_cache(int4_package, int4_ckpt, mini):
    _, spec, prog = load_program(int4_package)
    cfg = lq.model_config(mini)
    states = {s.name: np.zeros(list(s.type.stateType.arrayType.shape), np.float16) for s in spec.description.state}
    engine = lq.load(int4_ckpt)
    ids = engine.tokenize("Once upon a time, there was a little dog named Max.")
    n = len(ids) - 1

    def step(chunk, past):
        s = len(chunk)
        pos = np.arange(past, past + s, dtype=np.int32)
        mask = np.where(np.arange(past + s)[None, :] <= (past + np.arange(s))[:, None], 0, -np.inf).astype(np.float16)
        return run_program(prog, {"input_ids": np.array([chunk], np.int32), "position_ids": np.stack([pos] * 3),
                                  "causal_mask": mask[None, None]}, states)[0]

    prefill = step(ids[:n], 0)
    decode = step(ids[n:], n)  # reads the cache the prefill wrote
    got = np.concatenate([prefill, decode])
    ref = engine.logits(np.asarray(ids, np.int32))
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    print(f"MIL program (numpy, fp16 activations) vs engine: relative L2 {rel:.3g}")
    assert rel < 2e-2, rel
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    assert got.shape == (len(ids), cfg["vocab_size"])


def test_export_refuses_bad_requests(int4_ckpt, mini, tmp_path):
    from lance_quant import coreml
    with pytest.raises(lq.Error, match="is not quantized in this checkpoint"):
        coreml.export(mini, str(tmp_path / "a.mlpackage"), wtype="int4")
    with pytest.raises(lq.Error, match="only the und path"):
        coreml.export(int4_ckpt, str(tmp_path / "b.mlpackage"), path="gen")
    with pytest.raises(lq.Error, match=r"\.mlpackage"):
        coreml.export(int4_ckpt, str(tmp_path / "c"))
