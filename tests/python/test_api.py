"""lance_quant's Python API against the CLI on lance-mini: the same logits, answers and latents bit for bit,
the same JSON documents and output files, the C++ error messages, progress callbacks, the GIL released."""
import json
import os
import threading
import time

import numpy as np
import pytest

import lance_quant as lq
from conftest import SOURCE_DIR, bit_equal, read_safetensors, run_cli

PROMPT = "Once upon a time, a little fox"
CAPTION = "a large red circle in the top left on a white background"


@pytest.fixture(scope="module")
def model(mini):
    lq.set_num_threads(2)
    return lq.load(mini)


def test_package_has_stubs_and_docstrings():
    pkg = os.path.dirname(lq.__file__)
    stub = open(os.path.join(pkg, "_core.pyi")).read()
    for name in ["class Model", "def logits", "def text_to_image", "def calibrate", "def quantize", "def evaluate",
                 "class PackedLinear", "class Checkpoint", "class Vae", "class Vit", "def text_to_video",
                 "def understand", "def edit", "def write_mp4"]:
        assert name in stub, f"_core.pyi lacks {name}"
    assert os.path.exists(os.path.join(pkg, "py.typed"))
    for f in [lq.load, lq.Model.logits, lq.Model.text_to_image, lq.Model.generate, lq.calibrate, lq.quantize,
              lq.evaluate, lq.PackedLinear.apply, lq.Model.text_to_video, lq.Model.understand, lq.Model.edit,
              lq.Vae.decode, lq.Vae.write, lq.load_vae, lq.load_vit, lq.write_mp4]:
        assert f.__doc__ and len(f.__doc__) > 40, f


def test_logits_equal_cli_bit_for_bit(model, mini, exe, tmp_path):
    out = tmp_path / "logits.safetensors"
    run_cli("run", mini, "--task", "text", "--raw", "--prompt", PROMPT, "--max-new-tokens", "1", "--logits", out,
            "--threads", "2")
    cli = read_safetensors(out)
    ids = model.prompt_ids(PROMPT, raw=True)
    assert ids == cli["ids"].tolist()
    lg = model.logits(np.asarray(ids, dtype=np.int32))
    assert lg.shape == (len(ids), model.vocab_size) and lg.dtype == np.float32
    assert bit_equal(lg, cli["logits"])
    assert not lg.flags.owndata  # a view of the engine's buffer, not a copy


def test_logits_agree_with_golden_forward(model, mini):
    """Independent check of logits(): the fixture's golden und logits (made by the Python reference)."""
    g = read_safetensors(os.path.join(mini, "golden", "und_golden.safetensors"))
    checked = 0
    for k in sorted(k for k in g if k.endswith(".input_ids")):
        seq = k[: -len(".input_ids")]
        ids = g[k].astype(np.int32)
        if not (g[seq + ".position_ids"] == np.arange(len(ids))).all():
            continue  # not a plain causal text sequence
        ref = g[seq + ".logits"]
        lg = model.logits(ids)
        rel = np.abs(lg - ref).max() / np.abs(ref).max()
        assert rel < 1e-5, (seq, rel)
        checked += 1
    assert checked > 0


def test_generate_equals_cli(model, mini, exe):
    cli = json.loads(run_cli("run", mini, "--task", "text", "--prompt", "What color is the sky?", "--max-new-tokens",
                             "24", "--json", "--threads", "2").stdout)
    res = model.generate("What color is the sky?", max_new_tokens=24)
    assert res["generated_ids"] == cli["generated_ids"]
    assert res["text"] == cli["text"] and res["prompt_tokens"] == cli["prompt_tokens"]
    assert set(res) == set(cli)


def test_latents_equal_cli_bit_for_bit_and_progress(model, mini, exe, tmp_path):
    out = tmp_path / "lat.safetensors"
    run_cli("run", mini, "--task", "t2i", "--prompt", CAPTION, "--seed", "7", "--steps", "6", "--out", out,
            "--threads", "2")
    cli = read_safetensors(out)["latents"]
    calls = []
    x = model.text_to_image(CAPTION, seed=7, steps=6, progress=lambda d, t, s: calls.append((d, t, s)))
    assert x.shape == cli.shape == (1, 8, 8, 48) and x.dtype == np.float32
    assert bit_equal(x, cli)
    assert calls == [(i, 6, "t2i") for i in range(6)]
    # Explicit size and CFG: still the CLI's result.
    run_cli("run", mini, "--task", "t2i", "--prompt", CAPTION, "--seed", "2", "--steps", "3", "--cfg", "2.5",
            "--height", "96", "--width", "128", "--out", out, "--threads", "2")
    y = model.text_to_image(CAPTION, seed=2, steps=3, cfg=2.5, height=96, width=128)
    assert y.shape == (1, 6, 8, 48) and bit_equal(y, read_safetensors(out)["latents"])


def cli_error(*args):
    p = run_cli(*args, check=False)
    assert p.returncode != 0
    prefix = f"lance-quant {args[0]}: error: "
    line = [l for l in p.stderr.splitlines() if l.startswith(prefix)]
    assert line, p.stderr
    return line[0][len(prefix):]


def test_errors_raise_with_the_cli_message(model, mini, exe, tmp_path):
    msg = cli_error("run", mini, "--task", "t2i", "--prompt", "x", "--seed", "1", "--out", tmp_path / "a.safetensors",
                    "--height", "17", "--width", "32")
    with pytest.raises(lq.Error) as e:
        model.text_to_image("x", seed=1, height=17, width=32)
    assert str(e.value) == msg
    missing = str(tmp_path / "no-such-model")
    msg = cli_error("run", missing, "--task", "text", "--prompt", "x")
    with pytest.raises(lq.Error) as e:
        lq.load(missing)
    assert str(e.value) == msg
    assert isinstance(e.value, RuntimeError)
    msg = cli_error("quantize", mini, "--scheme", "awq-int3", "--out", tmp_path / "q")
    with pytest.raises(lq.Error) as e:
        lq.quantize(mini, str(tmp_path / "q"), scheme="awq-int3")
    assert str(e.value) == msg
    with pytest.raises(lq.Error, match="outside the vocabulary"):
        model.logits(np.array([1, 10**6], dtype=np.int32))
    with pytest.raises(lq.Error, match="device 'cuda' is not available"):
        lq.load(mini, device="cuda")


def test_gil_is_released_during_compute(model):
    ticks = [0]
    done = threading.Event()

    def work():
        try:
            model.text_to_image(CAPTION, seed=1, steps=8)
        finally:
            done.set()

    t = threading.Thread(target=work)
    t0 = time.perf_counter()
    t.start()
    while not done.is_set():
        ticks[0] += 1
    t.join()
    elapsed = time.perf_counter() - t0
    # With the GIL held for the whole sampler the loop above could not run while it computes.
    assert elapsed > 0.05 and ticks[0] > 10000, (elapsed, ticks[0])


def strip(doc, keys=("seconds", "forward_seconds", "out")):
    if isinstance(doc, dict):
        return {k: strip(v, keys) for k, v in doc.items() if k not in keys and not k.endswith("_seconds")}
    if isinstance(doc, list):
        return [strip(v, keys) for v in doc]
    return doc


def test_calibrate_same_json_and_file_as_cli(mini, exe, tmp_path):
    text = os.path.join(SOURCE_DIR, "data", "calib", "text.txt")
    t2i = os.path.join(mini, "calib_prompts.txt")
    args = ["--calib", f"text:{text}", "--calib", f"t2i:{t2i}", "--max-tokens", "512", "--max-prompts", "2",
            "--steps", "3", "--seq-len", "128"]
    cli = json.loads(run_cli("calibrate", mini, *args, "--out", tmp_path / "cli.safetensors", "--json",
                             "--threads", "2").stdout)
    calls = []
    res = lq.calibrate(mini, [f"text:{text}", f"t2i:{t2i}"], str(tmp_path / "py.safetensors"), max_tokens=512,
                       max_prompts=2, steps=3, seq_len=128, progress=lambda d, t, s: calls.append((d, t, s)))
    assert strip(res) == strip(cli)
    assert open(tmp_path / "py.safetensors", "rb").read() == open(tmp_path / "cli.safetensors", "rb").read()
    assert calls and calls[-1][0] == calls[-1][1] and all(s == "calibrate" for _, _, s in calls)
    with pytest.raises(lq.Error, match="already exists"):
        lq.calibrate(mini, [f"text:{text}"], str(tmp_path / "py.safetensors"))


def test_quantize_same_json_and_checkpoint_as_cli(mini, exe, tmp_path):
    cli = json.loads(run_cli("quantize", mini, "--scheme", "rtn-int4", "--group-size", "64", "--out",
                             tmp_path / "cli", "--json", "--threads", "2").stdout)
    calls = []
    res = lq.quantize(mini, str(tmp_path / "py"), scheme="rtn-int4", group_size=64,
                      progress=lambda d, t, s: calls.append((d, t, s)))
    assert strip(res) == strip(cli)
    assert res["out"] == str(tmp_path / "py")
    for f in sorted(os.listdir(tmp_path / "cli")):
        assert open(tmp_path / "cli" / f, "rb").read() == open(tmp_path / "py" / f, "rb").read(), f
    layers = lq.model_config(mini)["num_layers"]
    assert calls == [(i, layers, "quantize") for i in range(1, layers + 1)]


def test_gptq_with_a_bit_budget_same_checkpoint_as_cli(mini, exe, tmp_path):
    calib = os.path.join(SOURCE_DIR, "data", "calib", "text.txt")
    t2i = os.path.join(mini, "calib_prompts.txt")
    args = ["--scheme", "gptq-int4", "--bpw", "4.5", "--calib", "text:" + calib, "--calib", "t2i:" + t2i,
            "--max-tokens", "512", "--max-prompts", "1", "--steps", "2", "--awq-rows", "256", "--no-sequential"]
    cli = json.loads(run_cli("quantize", mini, *args, "--out", tmp_path / "cli", "--json", "--threads", "2").stdout)
    res = lq.quantize(mini, str(tmp_path / "py"), scheme="gptq-int4", bpw=4.5, calib=["text:" + calib, "t2i:" + t2i],
                      max_tokens=512, max_prompts=1, steps=2, awq_rows=256, sequential=False)
    assert strip(res) == strip(cli)
    assert res["bit_plan"]["average_bpw"] <= 4.5 and res["bit_plan"]["budget_bpw"] == 4.5
    for f in sorted(os.listdir(tmp_path / "cli")):
        assert open(tmp_path / "cli" / f, "rb").read() == open(tmp_path / "py" / f, "rb").read(), f
    with pytest.raises(lq.Error, match="--gptq-damp"):
        lq.quantize(mini, str(tmp_path / "bad"), scheme="gptq-int4", gptq_damp=0.0)


def test_output_rules_and_text_checks_as_the_cli(model, mini, exe, tmp_path):
    """io/output.h's rules and the UTF-8 checks apply to the API as to the CLI, with the same messages."""
    with pytest.raises(lq.Error, match=r"\[--prompt"):
        model.generate("a\x00b")  # a NUL byte is not text
    # An output inside an input is refused before any work.
    with pytest.raises(lq.Error, match="input"):
        lq.quantize(mini, os.path.join(mini, "q-inside"), scheme="rtn-int4", group_size=64)
    assert not os.path.exists(os.path.join(mini, "q-inside"))
    # NVFP4 has fixed blocks: a group size is refused unless an integer format is asked for too.
    msg = cli_error("quantize", mini, "--scheme", "nvfp4", "--group-size", "64", "--out", tmp_path / "n")
    with pytest.raises(lq.Error) as e:
        lq.quantize(mini, str(tmp_path / "n"), scheme="nvfp4", group_size=64)
    assert str(e.value) == msg
    # A report directory that lance-quant did not write is not replaced, even with force.
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(lq.Error):
            lq.evaluate(mini, mini, str(other), no_text=True, no_chat=True, t2i_prompts=os.path.join(mini, "calib_prompts.txt"),
                        max_t2i=1, steps=1, force=force)
    assert (other / "notes.txt").read_text() == "mine"
    # An evaluation file that is not UTF-8 text is refused before the engines load.
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(lq.Error, match="UTF-8"):
        lq.evaluate(mini, mini, str(tmp_path / "r"), text=[str(bad)], no_chat=True, no_t2i=True)


def test_progress_exception_stops_the_work(mini, tmp_path):
    def stop(done, total, stage):
        raise KeyboardInterrupt("stop here")

    with pytest.raises(KeyboardInterrupt, match="stop here"):
        lq.quantize(mini, str(tmp_path / "q"), scheme="rtn-int4", group_size=64, progress=stop)
    assert not os.path.exists(tmp_path / "q")  # nothing half-written at the destination


def test_evaluate_same_report_as_cli(mini, exe, tmp_path):
    lq.quantize(mini, str(tmp_path / "q"), scheme="rtn-int4", group_size=64)
    text = os.path.join(mini, "val_tinystories.txt")
    prompts = os.path.join(mini, "calib_prompts.txt")
    run_cli("eval", mini, tmp_path / "q", "--out", tmp_path / "cli", "--text", text, "--max-text-tokens", "512",
            "--no-chat", "--t2i-prompts", prompts, "--max-t2i", "1", "--steps", "3", "--threads", "2", "--quiet")
    stages = set()
    rep = lq.evaluate(mini, str(tmp_path / "q"), str(tmp_path / "py"), text=[text], max_text_tokens=512, no_chat=True,
                      t2i_prompts=prompts, max_t2i=1, steps=3, progress=lambda d, t, s: stages.add(s))
    cli = json.load(open(tmp_path / "cli" / "report.json"))
    assert rep == json.load(open(tmp_path / "py" / "report.json"))
    keys = ("seconds", "out", "report", "quant_dir", "base_dir")
    assert strip(rep, keys) == strip(cli, keys)
    assert stages


def test_packed_linear_in_place_against_numpy():
    rng = np.random.default_rng(0)
    out_f, in_f, g = 40, 256, 64
    codes = rng.integers(0, 16, (out_f, in_f), dtype=np.uint8)
    scales = (rng.random((out_f, in_f // g), dtype=np.float32) * 0.02 + 0.001).astype(np.float32)
    zeros = rng.integers(0, 16, (out_f, in_f // g), dtype=np.uint8)
    bias = rng.standard_normal(out_f).astype(np.float32)
    p = lq.PackedLinear.from_int4(codes, scales, zeros, g, bias)
    assert (p.in_features, p.out_features, p.group_size, p.has_bias) == (in_f, out_f, g, True)
    w = (codes.astype(np.float64) - np.repeat(zeros, g, axis=1)) * np.repeat(scales, g, axis=1)
    for n in (1, 3, 40):
        x = rng.standard_normal((n, in_f)).astype(np.float32)
        y = np.full((n, out_f), np.nan, dtype=np.float32)
        p.apply(x, y)  # written in place
        ref = x.astype(np.float64) @ w.T + bias
        err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        assert err < 1e-2, (n, err)  # int8 activations for <= 32 tokens: ~0.5% RMS
    with pytest.raises(lq.Error, match="input has 255 features"):
        p.apply(np.zeros((1, 255), np.float32), np.zeros((1, out_f), np.float32))


def test_checkpoint_reads_canonical_int4(mini, tmp_path):
    lq.quantize(mini, str(tmp_path / "q"), scheme="rtn-int4", group_size=64)
    ck = lq.Checkpoint(str(tmp_path / "q"))
    assert ck.format == "lance-quant-v1"
    lins = ck.quantized_linears()
    assert len(lins) == 2 * 7 * lq.model_config(mini)["num_layers"]
    d = lins[0]
    q = ck.read_quantized(d["name"])
    w = (q["codes"].astype(np.float32) - np.repeat(q["zeros"], 64, axis=1)) * np.repeat(q["scales"], 64, axis=1)
    assert bit_equal(w.astype(np.float32), ck.dequantize(d["name"]))
    dense = lq.Checkpoint(mini)
    assert dense.format == "dense" and dense.quantized_linears() == []
    name = "language_model.model.norm.weight"
    assert dense.read(name).shape == tuple(dense.shape(name))
