"""The ComfyUI node pack, driven the way ComfyUI's executor drives nodes (execution.py): the pack is imported as
a custom_nodes package, classes are looked up through NODE_CLASS_MAPPINGS, every prompt input is validated
against INPUT_TYPES (required inputs present, linked types equal to the producer's RETURN_TYPES, INT / FLOAT /
STRING conversion and min / max, COMBO membership), inputs are wrapped in lists (get_input_data) and
FUNCTION is called once per list element (map_node_over_list); {"ui", "result"} returns are unpacked.
Runs the lance-mini workflow (comfyui/workflows/lance_mini_api.json) and checks types and shapes: LATENT
{"samples": [B, 48, T, H, W]} in the Wan 2.2 raw space, IMAGE [B, H, W, 3] in 0..1, STRING."""
import copy
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch

import lance_quant as lq
from conftest import SOURCE_DIR, bit_equal

# ComfyUI core nodes that the README workflow uses, transcribed from ComfyUI's nodes.py.
CORE_NODES = {
    "LoadImage": {"required": {"image": "COMBO"}, "RETURN_TYPES": ("IMAGE", "MASK")},
    "VAELoader": {"required": {"vae_name": "COMBO"}, "RETURN_TYPES": ("VAE",)},
    "VAEDecode": {"required": {"samples": "LATENT", "vae": "VAE"}, "RETURN_TYPES": ("IMAGE",)},
    "SaveImage": {"required": {"images": "IMAGE", "filename_prefix": "STRING"}, "RETURN_TYPES": ()},
}


def load_pack():
    """Imports comfyui/ as ComfyUI imports a custom_nodes folder (a package from its __init__.py)."""
    path = os.path.join(SOURCE_DIR, "comfyui", "__init__.py")
    spec = importlib.util.spec_from_file_location("lance_quant_comfyui", path,
                                                  submodule_search_locations=[os.path.dirname(path)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


PACK = load_pack()
MAPPINGS = PACK.NODE_CLASS_MAPPINGS


def return_types(class_type):
    if class_type in MAPPINGS:
        return MAPPINGS[class_type].RETURN_TYPES
    return CORE_NODES[class_type]["RETURN_TYPES"]


def validate(prompt, node_id):
    """ComfyUI's validate_inputs for one of our nodes; returns the list of errors."""
    node = prompt[node_id]
    cls = MAPPINGS[node["class_type"]]
    spec = cls.INPUT_TYPES()
    errors = []
    inputs = node["inputs"]
    for section in ("required", "optional"):
        for name, info in spec.get(section, {}).items():
            if name not in inputs:
                if section == "required":
                    errors.append(f"required input missing: {name}")
                continue
            val, type_input = inputs[name], info[0]
            if isinstance(val, list):
                produced = return_types(prompt[val[0]]["class_type"])[val[1]]
                if produced != type_input:
                    errors.append(f"{name}: {produced} != {type_input}")
                continue
            try:
                if type_input == "INT":
                    val = int(val)
                elif type_input == "FLOAT":
                    val = float(val)
                elif type_input == "STRING":
                    val = str(val)
                elif type_input == "BOOLEAN":
                    assert isinstance(val, bool)
            except Exception as ex:  # noqa: BLE001
                errors.append(f"{name}: cannot convert {val!r} to {type_input} ({ex})")
                continue
            opts = info[1] if len(info) > 1 else {}
            if "min" in opts and val < opts["min"]:
                errors.append(f"{name}: {val} smaller than min {opts['min']}")
            if "max" in opts and val > opts["max"]:
                errors.append(f"{name}: {val} bigger than max {opts['max']}")
            if isinstance(type_input, list) and val not in type_input:
                errors.append(f"{name}: '{val}' not in {type_input}")
            inputs[name] = val
    for name in inputs:
        if name not in spec.get("required", {}) and name not in spec.get("optional", {}):
            errors.append(f"unknown input {name}")
    return errors


def execute(prompt, node_id, outputs):
    """recursive_execute + get_input_data + map_node_over_list + get_output_data for one node."""
    if node_id in outputs:
        return outputs[node_id]
    node = prompt[node_id]
    cls = MAPPINGS[node["class_type"]]
    data = {}
    for name, val in node["inputs"].items():
        if isinstance(val, list):
            data[name] = execute(prompt, val[0], outputs)[val[1]]  # already a list of values
        else:
            data[name] = [val]
    obj = cls()
    n = max((len(v) for v in data.values()), default=0)
    results = []
    for i in range(max(n, 1)):
        kwargs = {k: v[i if len(v) > i else -1] for k, v in data.items()}
        r = getattr(obj, cls.FUNCTION)(**kwargs)
        if isinstance(r, dict):
            r = r["result"]
        assert isinstance(r, tuple) and len(r) == len(cls.RETURN_TYPES), (node["class_type"], r)
        results.append(r)
    outputs[node_id] = [[r[k] for r in results] for k in range(len(cls.RETURN_TYPES))]
    return outputs[node_id]


def workflow(name):
    with open(os.path.join(SOURCE_DIR, "comfyui", "workflows", name)) as f:
        return json.load(f)


def test_node_classes_follow_comfyui_conventions():
    assert set(PACK.NODE_DISPLAY_NAME_MAPPINGS) == set(MAPPINGS)
    for name, cls in MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and "required" in spec, name
        for inputs in spec.values():
            for key, info in inputs.items():
                assert isinstance(info, tuple) and len(info) in (1, 2), (name, key)
                assert isinstance(info[0], (str, list)), (name, key)
                if len(info) == 2:
                    assert isinstance(info[1], dict)
                    if "default" in info[1] and isinstance(info[0], list):
                        assert info[1]["default"] in info[0], (name, key)
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
        if hasattr(cls, "RETURN_NAMES"):
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        assert callable(getattr(cls, cls.FUNCTION)) and isinstance(cls.CATEGORY, str)


def test_mini_workflow_runs_like_comfyui(mini, tmp_path):
    prompt = workflow("lance_mini_api.json")
    prompt["1"]["inputs"]["model_path"] = mini
    for node_id in prompt:
        assert validate(prompt, node_id) == [], node_id
    outputs = {}
    for node_id in prompt:
        execute(prompt, node_id, outputs)

    model = outputs["1"][0][0]
    assert isinstance(model, lq.Model)
    latent = outputs["2"][0][0]
    assert set(latent) == {"samples"}
    s = latent["samples"]
    assert isinstance(s, torch.Tensor) and s.dtype == torch.float32 and tuple(s.shape) == (2, 48, 1, 8, 8)
    # Image i of the batch = the API's latents for seed 1 + i, in ComfyUI's raw Wan 2.2 space.
    mean, std = PACK.nodes.wan22_stats()
    for i in range(2):
        x = model.text_to_image(prompt["2"]["inputs"]["prompt"], seed=1 + i, steps=30, cfg=4.0, shift=3.5,
                                height=128, width=128)
        expect = torch.from_numpy(x).permute(3, 0, 1, 2) * std[0] + mean[0]
        assert torch.equal(s[i], expect)
    assert not torch.equal(s[0], s[1])
    image = outputs["3"][0][0]
    assert image.dtype == torch.float32 and tuple(image.shape) == (2, 32, 32, 3)
    assert image.min() >= 0 and image.max() <= 1
    # The toy decode inverts the Wan 2.2 mapping and equals the CLI's PNG decode (lance_quant.toy_vae_decode).
    x = model.text_to_image(prompt["2"]["inputs"]["prompt"], seed=1, steps=30, height=128, width=128)
    px = lq.toy_vae_decode(x, 4, 0.5, 0.36)
    assert np.abs(image[0].numpy() - px).max() < 1e-5
    text = outputs["4"][0][0]
    ref = model.generate("Once upon a time", max_new_tokens=16, raw=True)["text"]
    assert isinstance(text, str) and text == ref


def test_validation_rejects_bad_inputs(mini):
    prompt = workflow("lance_mini_api.json")
    bad = copy.deepcopy(prompt)
    bad["2"]["inputs"]["steps"] = 0
    assert any("smaller than min" in e for e in validate(bad, "2"))
    bad = copy.deepcopy(prompt)
    bad["1"]["inputs"]["dtype"] = "f8"
    assert any("not in" in e for e in validate(bad, "1"))
    bad = copy.deepcopy(prompt)
    bad["3"]["inputs"]["samples"] = ["1", 0]
    assert any("LANCE_MODEL != LATENT" in e for e in validate(bad, "3"))


def test_readme_workflow_is_wired_correctly():
    prompt = workflow("lance_t2i_wan22_api.json")
    for node_id, node in prompt.items():
        if node["class_type"] in MAPPINGS:
            assert validate(prompt, node_id) == [], node_id
        else:
            spec = CORE_NODES[node["class_type"]]
            for name, type_input in spec["required"].items():
                val = node["inputs"][name]
                if isinstance(val, list):
                    assert return_types(prompt[val[0]]["class_type"])[val[1]] == type_input, (node_id, name)
    # The README shows this workflow verbatim.
    readme = open(os.path.join(SOURCE_DIR, "README.md")).read()
    start = readme.index("<!-- comfyui-workflow -->")
    block = readme[readme.index("```json", start) + len("```json"):]
    block = block[:block.index("```")]
    assert json.loads(block) == prompt


def test_visual_qa_without_vision_tower_says_so(mini):
    loader = MAPPINGS["LanceModelLoader"]()
    (model,) = loader.load(mini, "cpu", "f32", "stored", 2)
    with pytest.raises(lq.Error, match="vit_model"):
        MAPPINGS["LanceTextGenerate"]().generate(model, "What is in the picture?", 8, True,
                                                 image=torch.zeros(1, 32, 32, 3))


def comfy_image(frames_u8):
    """uint8 [B, H, W, 3] -> a ComfyUI IMAGE (float32 0..1), as LoadImage makes it."""
    return torch.from_numpy(np.array(frames_u8)).float() / 255.0


def photo(name):
    from PIL import Image
    return np.asarray(Image.open(os.path.join(SOURCE_DIR, "data", "images", name)).convert("RGB"))


def test_visual_qa_nodes_answer_about_a_comfyui_image(media):
    (model,) = MAPPINGS["LanceModelLoader"]().load(media["model"], "cpu", "f32", "stored", 2)
    img = photo("chelsea.jpg")
    image = comfy_image(img[None])
    want = model.understand("what animal is this?", image=img, max_new_tokens=8)["text"]
    r = MAPPINGS["LanceVisualQA"]().answer(model, image, "what animal is this?", 8, False, 24.0)
    assert r["result"] == (want,) and r["ui"]["text"] == [want]
    r = MAPPINGS["LanceVisualQA"]().answer(model, image, "what animal is this?", 8, False, 24.0, vit_path=media["vit"])
    assert r["result"] == (want,)  # the same ViT, once from the checkpoint and once from its directory
    r = MAPPINGS["LanceTextGenerate"]().generate(model, "what animal is this?", 8, True, image=image)
    assert r["result"] == (want,)
    # A batch as the frames of one video = the API on those frames.
    frames = np.stack([np.roll(img, 8 * k, axis=1) for k in range(6)])
    want_v = model.understand("what moves?", video=frames, fps=6.0, max_new_tokens=4)["text"]
    r = MAPPINGS["LanceVisualQA"]().answer(model, comfy_image(frames), "what moves?", 4, True, 6.0)
    assert r["result"] == (want_v,)


def test_video_and_edit_workflows_run_like_comfyui(media, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # LanceSaveVideo writes into the working directory outside ComfyUI
    prompt = workflow("lance_t2v_edit_api.json")
    prompt["1"]["inputs"]["model_path"] = media["model"]
    prompt["2"]["inputs"]["vae_path"] = media["vae"]
    prompt["6"]["inputs"]["vit_path"] = media["vit"]  # lance-mini has no vit_model.*: the small synth ViT
    src = photo("chelsea.jpg")
    for node_id in prompt:
        if prompt[node_id]["class_type"] in MAPPINGS:
            assert validate(prompt, node_id) == [], node_id
    outputs = {"7": [[comfy_image(src[None])]]}  # the LoadImage node of the workflow (ComfyUI core)
    for node_id in prompt:
        if prompt[node_id]["class_type"] in MAPPINGS:
            execute(prompt, node_id, outputs)
    model, vae = outputs["1"][0][0], outputs["2"][0][0]
    assert isinstance(vae, lq.Vae) and vae.z_dim == 48
    # Text to video: LATENT [1, 48, 3, 8, 8] in the Wan 2.2 raw space = the API's latents.
    t2v = prompt["3"]["inputs"]
    latent = outputs["3"][0][0]["samples"]
    assert tuple(latent.shape) == (1, 48, 3, 8, 8)
    x = model.text_to_video(t2v["prompt"], seed=t2v["seed"], frames=t2v["frames"], steps=t2v["steps"], cfg=t2v["cfg"],
                            shift=t2v["shift"], height=t2v["height"], width=t2v["width"])
    mean, std = PACK.nodes.wan22_stats()
    assert torch.equal(latent[0], torch.from_numpy(x).permute(3, 0, 1, 2) * std[0] + mean[0])
    # VAE Decode: 9 frames as an IMAGE = the API's decode (through the raw-space round trip: within one level).
    video = outputs["4"][0][0]
    assert video.dtype == torch.float32 and tuple(video.shape) == (9, 128, 128, 3)
    assert video.min() >= 0 and video.max() <= 1
    direct = torch.from_numpy(vae.decode(x)).float() / 255.0
    assert (video - direct).abs().max() <= 1 / 255 + 1e-6
    # Save Video: an MP4 in the output folder.
    mp4s = [f for f in os.listdir(tmp_path) if f.endswith(".mp4")]
    assert len(mp4s) == 1 and os.path.getsize(tmp_path / mp4s[0]) > 0
    # Image edit from the IMAGE = the API's edit of the same pixels.
    ed = prompt["6"]["inputs"]
    edited = outputs["6"][0][0]["samples"]
    y, info = model.edit(ed["instruction"], seed=ed["seed"], vae=vae, image=src, resolution=ed["resolution"],
                         steps=ed["steps"], cfg=ed["cfg"], shift=ed["shift"], vit=media["vit"])
    assert info["vit_reference"] is True
    assert tuple(edited.shape) == (1, 48) + (y.shape[0], y.shape[1], y.shape[2])
    assert torch.equal(edited[0], torch.from_numpy(y).permute(3, 0, 1, 2) * std[0] + mean[0])
    picture = outputs["8"][0][0]
    assert tuple(picture.shape) == (1, 16 * y.shape[1], 16 * y.shape[2], 3)


def test_quantize_node(mini, tmp_path):
    node = MAPPINGS["LanceQuantize"]()
    r = node.quantize(mini, str(tmp_path / "q"), "rtn-int4", 64, "lance-quant-v1", "", "", False)
    out, report = r["result"]
    assert out == str(tmp_path / "q") and json.loads(report)["quantized_linears"] == 56
    (model,) = MAPPINGS["LanceModelLoader"]().load(out, "cpu", "f32", "stored", 2)
    lat = MAPPINGS["LanceTextToImage"]().sample(model, "a blue square", 3, 4, 4.0, 3.5, 128, 128, 1)[0]
    assert tuple(lat["samples"].shape) == (1, 48, 1, 8, 8)
