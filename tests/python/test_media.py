"""Pictures, videos, editing and understanding through the Python API, against the CLI on the same inputs.

Fixtures (conftest.media): lance-mini with a random small ViT embedded, a random tiny Wan2.2 VAE. Random
weights: these tests prove the plumbing (the API computes exactly what `lance-quant run` computes, shapes,
frame counts, pixel inputs as files, errors), not picture quality."""
import json
import os

import numpy as np
import pytest

import lance_quant as lq
from conftest import bit_equal, cli_json, data_file, read_safetensors, run_cli


@pytest.fixture(scope="module")
def model(media):
    lq.set_num_threads(2)
    return lq.load(media["model"])


@pytest.fixture(scope="module")
def vae(media):
    return lq.load_vae(media["vae"])


def read_png(path):
    PIL = pytest.importorskip("PIL.Image", reason="pillow (tools/requirements-test.txt) reads the CLI's PNGs")
    return np.asarray(PIL.open(path).convert("RGB"))


def smooth_image(h, w, seed=0):
    """A smooth uint8 test picture (random low-frequency colours), so bucket resizing has something to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(1, 6, 3)
        img[:, :, c] = 127.5 + 120 * np.sin(a * x * np.pi + p) * np.cos(b * y * np.pi)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_t2v_latents_and_frames_equal_the_cli(media, model, vae, tmp_path):
    x = model.text_to_video("a red circle moving right", seed=2, frames=9, steps=3)
    assert x.dtype == np.float32 and x.shape == (3, 8, 8, 48)
    run_cli("run", media["model"], "--task", "t2v", "--prompt", "a red circle moving right", "--seed", 2, "--steps", 3,
            "--frames", 9, "--vae", media["vae"], "--frames-dir", tmp_path / "frames", "--out", tmp_path / "t2v.safetensors")
    assert bit_equal(x, read_safetensors(str(tmp_path / "t2v.safetensors"))["latents"])
    steps = []
    frames = vae.decode(x, progress=lambda d, t, s: steps.append((d, t, s)))
    assert frames.dtype == np.uint8 and frames.shape == (9, 128, 128, 3)  # 4 (3 - 1) + 1 frames, 16x
    assert steps and steps[-1][0] == steps[-1][1] and steps[-1][2] == "vae"
    names = sorted(f for f in os.listdir(tmp_path / "frames") if f.endswith(".png"))  # + lance-quant.json
    assert len(names) == 9
    for k in (0, 4, 8):
        assert np.array_equal(frames[k], read_png(str(tmp_path / "frames" / names[k])))
    info = vae.write(x, mp4=str(tmp_path / "api.mp4"), png=str(tmp_path / "first.png"), fps=12)
    assert info["frames"] == 9 and info["width"] == 128 and info["height"] == 128 and info["fps"] == 12
    assert os.path.getsize(tmp_path / "api.mp4") > 0
    assert np.array_equal(read_png(str(tmp_path / "first.png")), frames[0])
    pil = lq.to_pil(frames)
    assert len(pil) == 9 and pil[0].size == (128, 128)


def test_t2i_picture_through_the_vae_equals_the_cli_png(media, model, vae, tmp_path):
    x = model.text_to_image("a red circle", seed=1, steps=3)
    run_cli("run", media["model"], "--task", "t2i", "--prompt", "a red circle", "--seed", 1, "--steps", 3,
            "--vae", media["vae"], "--png", tmp_path / "t2i.png", "--out", tmp_path / "t2i.safetensors")
    assert bit_equal(x, read_safetensors(str(tmp_path / "t2i.safetensors"))["latents"])
    px = vae.decode(x)
    assert px.shape == (1, 128, 128, 3)
    assert np.array_equal(px[0], read_png(str(tmp_path / "t2i.png")))
    assert lq.to_pil(px[0]).size == (128, 128)


def test_edit_from_a_file_and_from_pixels_equals_the_cli(media, model, vae, tmp_path):
    img = smooth_image(96, 144)
    src = str(tmp_path / "src.png")
    lq.write_png(img, src)
    args = ["--task", "edit", "--prompt", "make it blue", "--seed", 5, "--steps", 3, "--resolution", 128,
            "--vae", media["vae"], "--vit", media["vit"]]
    j = cli_json(media["model"], "--image", src, *args, "--out", tmp_path / "edit.safetensors")
    cli = read_safetensors(str(tmp_path / "edit.safetensors"))["latents"]
    y, info = model.edit("make it blue", seed=5, vae=vae, image=src, resolution=128, steps=3, vit=media["vit"])
    assert bit_equal(y, cli)
    assert info["source_size"] == j["edit"]["source_size"] and info["vit_reference"] is True
    # The checkpoint's own vit_model.* (the same weights here) gives the same edit; without the ViT reference
    # (not Lance's conditioning, only on request) another one.
    yc, _ = model.edit("make it blue", seed=5, vae=vae, image=src, resolution=128, steps=3)
    assert bit_equal(yc, y)
    y0, info0 = model.edit("make it blue", seed=5, vae=vae, image=src, resolution=128, steps=3, no_vit_reference=True)
    assert info0["vit_reference"] is False and not np.array_equal(y0, y)
    assert y.shape[0] == 1 and list(y.shape[1:3]) == [s // 16 for s in reversed(info["source_size"])]
    # Pixels instead of a file: uint8, float 0..1 (a ComfyUI IMAGE) and a PIL image give the same edit.
    y8, _ = model.edit("make it blue", seed=5, vae=vae, image=img, resolution=128, steps=3, vit=media["vit"])
    yf, _ = model.edit("make it blue", seed=5, vae=vae, image=img.astype(np.float32) / 255.0, resolution=128, steps=3,
                       vit=media["vit"])
    assert bit_equal(y8, cli) and bit_equal(yf, cli)
    # Another source gives another edit.
    y2, _ = model.edit("make it blue", seed=5, vae=vae, image=smooth_image(96, 144, seed=1), resolution=128, steps=3,
                       vit=media["vit"])
    assert not np.array_equal(y2, y)


def test_video_edit_from_frames_equals_the_cli_on_a_folder(media, model, vae, tmp_path):
    frames = np.stack([np.roll(smooth_image(64, 96), 2 * k, axis=1) for k in range(18)])  # 0.75 s at 24 fps
    folder = tmp_path / "clip"
    folder.mkdir()
    for k, f in enumerate(frames):
        lq.write_png(f, str(folder / f"f{k:02d}.png"))
    run_cli("run", media["model"], "--task", "edit", "--video", folder, "--prompt", "make it snow", "--seed", 3,
            "--steps", 2, "--resolution", 64, "--vae", media["vae"], "--no-vit-reference",
            "--out", tmp_path / "vedit.safetensors")
    y, info = model.edit("make it snow", seed=3, vae=vae, video=frames, fps=24, resolution=64, steps=2,
                         no_vit_reference=True)
    assert bit_equal(y, read_safetensors(str(tmp_path / "vedit.safetensors"))["latents"])
    assert info["source_frames"] == 9 and y.shape[0] == 3  # 12 fps over 0.75 s: 9 frames = 4 * 2 + 1


def test_understanding_image_and_video_equal_the_cli(media, model, tmp_path):
    img = data_file("images/chelsea.jpg")
    q = "what animal is this?"
    j = cli_json(media["model"], "--task", "x2t", "--image", img, "--resolution", 224, "--prompt", q,
                 "--max-new-tokens", 8, "--vit", media["vit"])
    vit = lq.load_vit(media["vit"])
    assert vit.out_hidden == 256
    a = model.understand(q, image=img, vit=vit, resolution=224, max_new_tokens=8)
    assert a["generated_ids"] == j["generated_ids"] and a["grid_thw"] == [1, 6, 9] and a["vit_tokens"] == 54
    b = model.understand(q, image=img, resolution=224, max_new_tokens=8)  # the checkpoint's own vit_model.*
    assert b["generated_ids"] == j["generated_ids"] and b["prompt_tokens"] == j["prompt_tokens"]
    # Frames as pixels = the CLI on a folder of the same PNGs at the same frame rate.
    frames = np.stack([smooth_image(120, 160, seed=k // 3) for k in range(10)])
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(frames):
        lq.write_png(f, str(folder / f"f{k}.png"))
    jv = cli_json(media["model"], "--task", "x2t", "--video", folder, "--fps", 5, "--resolution", 224, "--prompt",
                  "what moves?", "--max-new-tokens", 4)
    v = model.understand("what moves?", video=frames, fps=5, resolution=224, max_new_tokens=4)
    assert v["generated_ids"] == jv["generated_ids"] and v["frames"] == jv["frames"] == 22
    assert v["grid_thw"] == jv["grid_thw"]


def test_quantize_vit_then_understand_from_the_checkpoint(media, tmp_path):
    """quantize(vit=True) writes the model's own ViT 4-bit (the CLI's file, byte for byte); the quantized
    checkpoint answers about an image with no vit= (its 4-bit ViT), as `run --task x2t` does."""
    out, cli = str(tmp_path / "q"), tmp_path / "q-cli"
    rep = lq.quantize(media["model"], out, scheme="rtn-int4", vit=True)
    assert rep["vit"]["quantized_linears"] == 18 and rep["vit"]["groups"] == {"64": 18}
    assert [k["name"] for k in rep["vit"]["kept_dense"]][1:] == [f"vit_model.blocks.{b}.mlp.down_proj" for b in range(4)]
    run_cli("quantize", media["model"], "--scheme", "rtn-int4", "--vit", "--out", cli)
    with open(os.path.join(out, "awq_state_dict.safetensors"), "rb") as f, open(cli / "awq_state_dict.safetensors", "rb") as g:
        assert f.read() == g.read()
    img = data_file("images/chelsea.jpg")
    j = cli_json(out, "--task", "x2t", "--image", img, "--resolution", 224, "--prompt", "what?", "--max-new-tokens", 6)
    assert j["vit_quantization"].startswith("int4 g64 x18")
    a = lq.load(out).understand("what?", image=img, resolution=224, max_new_tokens=6)
    assert a["generated_ids"] == j["generated_ids"] and a["vit_tokens"] == 54


def test_media_errors_carry_the_cli_messages(media, model, vae, mini):
    with pytest.raises(lq.Error, match="exactly one of image= or video="):
        model.understand("q")
    with pytest.raises(lq.Error, match="--frames"):
        model.text_to_video("a", seed=1, frames=0)
    with pytest.raises(lq.Error, match="channels"):
        vae.decode(np.zeros((1, 2, 2, 12), np.float32))
    with pytest.raises(lq.Error, match="nothing to write"):
        vae.write(np.zeros((1, 2, 2, 48), np.float32))
    with pytest.raises(lq.Error, match="vit_model"):
        lq.load(mini).understand("q", image=data_file("images/camera.png"))
    with pytest.raises(lq.Error, match="no-vit-reference"):  # Lance edits need the ViT reference
        lq.load(mini).edit("x", seed=1, vae=vae, image=data_file("images/camera.png"))
    with pytest.raises(lq.Error, match="contradicts"):
        model.edit("x", seed=1, vae=vae, image=data_file("images/camera.png"), vit=media["vit"], no_vit_reference=True)
    with pytest.raises(lq.Error, match="nonexistent"):
        model.edit("x", seed=1, vae=vae, image="/nonexistent.png", no_vit_reference=True)
    with pytest.raises(lq.Error, match="Wan2.2|VAE|vae|exist"):
        lq.load_vae("/nonexistent-vae")
    with pytest.raises(lq.Error, match="UTF-8|--prompt"):
        model.text_to_video("a\x00b", seed=1, frames=1)


def test_vae_write_follows_the_output_rules(media, vae, tmp_path):
    x = np.zeros((1, 2, 2, 48), np.float32)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(lq.Error):  # a directory lance-quant did not write is not replaced
        vae.write(x, frames_dir=str(mine))
    assert (mine / "keep.txt").read_text() == "mine"
    with pytest.raises(lq.Error):  # an output that is an input (the VAE's own weights)
        vae.write(x, png=vae.path)
    assert os.path.exists(vae.path)
    info = vae.write(x, frames_dir=str(tmp_path / "frames"))
    assert info["frames"] == 1 and sorted(os.listdir(tmp_path / "frames"))[0].startswith("frame_0000")
    info = vae.write(x, frames_dir=str(tmp_path / "frames"))  # its own output may be replaced
    assert info["frames"] == 1


def test_calibrate_on_images_equals_the_cli(media, tmp_path):
    src = ["x2t_image:" + data_file("calib/x2t_image.jsonl"), "text:" + data_file("calib/text.txt")]
    res = lq.calibrate(media["model"], src, str(tmp_path / "api.safetensors"), max_prompts=1, max_tokens=256,
                       x2t_resolution=224, allow_partial=True)
    run_cli("calibrate", media["model"], "--calib", src[0], "--calib", src[1], "--max-prompts", 1, "--max-tokens", 256,
            "--x2t-resolution", 224, "--allow-partial", "--out", tmp_path / "cli.safetensors")
    assert res["coverage"]["und"]["covered"] == res["coverage"]["und"]["linears"] > 0
    with open(tmp_path / "api.safetensors", "rb") as f, open(tmp_path / "cli.safetensors", "rb") as g:
        assert f.read() == g.read()


def test_evaluate_understanding_and_pictures_same_report_as_cli(media, tmp_path):
    """eval with x2t questions (4-bit ViT for QUANT) and VAE-decoded t2i pictures: the API's report.json equals
    the CLI's (timings and paths aside). BASE = QUANT here (the plumbing, not a quantization result)."""
    m = media["model"]
    x2t = data_file("calib/x2t_image.jsonl")
    prompts = os.path.join(os.environ.get("LQ_SHARED_DIR", ""), "fixtures", "lance-mini", "calib_prompts.txt")
    run_cli("eval", m, m, "--out", tmp_path / "cli", "--no-text", "--no-chat", "--t2i-prompts", prompts, "--max-t2i", 1,
            "--steps", 2, "--x2t-image", x2t, "--max-x2t", 1, "--x2t-resolution", 224, "--max-new-tokens", 4,
            "--vit-quant", "int4", "--vae", media["vae"], "--threads", 2, "--quiet")
    stages = set()
    rep = lq.evaluate(m, m, str(tmp_path / "py"), no_text=True, no_chat=True, t2i_prompts=prompts, max_t2i=1, steps=2,
                      x2t_image=x2t, max_x2t=1, x2t_resolution=224, max_new_tokens=4, vit_quant="int4",
                      vae=media["vae"], progress=lambda d, t, s: stages.add(s))
    cli = json.load(open(tmp_path / "cli" / "report.json"))

    def strip(doc):
        skip = ("seconds", "out", "report", "quant_dir", "base_dir", "side_by_side")
        if isinstance(doc, dict):
            return {k: strip(v) for k, v in doc.items() if k not in skip and not k.endswith("_seconds")}
        if isinstance(doc, list):
            return [strip(v) for v in doc]
        return doc

    assert strip(rep) == strip(cli)
    assert "x2t" in stages
    assert os.path.exists(tmp_path / "py" / "t2i_side_by_side.png")
    text = json.dumps(rep)
    assert "RTN INT4" in text  # QUANT's 4-bit ViT is reported
