"""ComfyUI nodes over the lance_quant package (native C++ engine; 4-bit checkpoints run on its fused kernels).

Conventions follow ComfyUI's own nodes (nodes.py, execution.py, comfy/latent_formats.py):
* INPUT_TYPES is a classmethod returning {"required": {...}, "optional": {...}}; widget inputs are
  ("INT" | "FLOAT" | "STRING" | "BOOLEAN", {options}) or a list of choices (a COMBO); RETURN_TYPES /
  RETURN_NAMES / FUNCTION / CATEGORY are class attributes; FUNCTION returns a tuple (or {"ui", "result"}).
* LATENT is a dict {"samples": tensor}. For Wan 2.2 latents the tensor is [B, 48, T, H, W] in the VAE's raw
  space: ComfyUI's samplers return latent_format.process_out(x) = x * std + mean (comfy.latent_formats.Wan22)
  and its Wan 2.2 VAE Decode takes that raw latent. Lance's sampler works in the normalised space
  (x - mean) / std of the same 48 constants (Lance's modeling/vae/wan/vae2_2.py), so the sampler node maps
  its result with x * std + mean and ComfyUI's own "VAE Decode" with the Wan 2.2 VAE makes the picture.
* IMAGE is a float tensor [B, H, W, 3] in 0..1.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Dict, Tuple

import torch

import lance_quant

CATEGORY = "lance_quant"

# Per-channel mean / std of the Wan 2.2 VAE latent (48 channels): the constants of Lance's Wan2_2_VAE,
# identical to ComfyUI's comfy.latent_formats.Wan22.
WAN22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


def wan22_stats(dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) shaped [1, 48, 1, 1, 1] for LATENT samples [B, 48, T, H, W]."""
    shape = (1, len(WAN22_MEAN), 1, 1, 1)
    return (torch.tensor(WAN22_MEAN, dtype=dtype).view(shape), torch.tensor(WAN22_STD, dtype=dtype).view(shape))


def lance_to_latent(latents) -> torch.Tensor:
    """Lance sampler output [t, h, w, 48] (normalised) -> one LATENT sample [48, t, h, w] (raw Wan 2.2)."""
    x = torch.from_numpy(latents).permute(3, 0, 1, 2)
    mean, std = wan22_stats(x.dtype)
    return x * std[0] + mean[0]


def latent_to_lance(samples: torch.Tensor) -> torch.Tensor:
    """LATENT samples [B, 48, T, H, W] (raw Wan 2.2) -> Lance's normalised [B, T, H, W, 48]."""
    mean, std = wan22_stats(samples.dtype)
    return ((samples - mean) / std).permute(0, 2, 3, 4, 1).contiguous()


class _Progress:
    """Reports sampler steps to ComfyUI's progress bar and stops when the user interrupts the queue."""

    def __init__(self, total: int):
        self.bar = None
        self.mm = None
        try:
            import comfy.utils
            import comfy.model_management
            self.bar = comfy.utils.ProgressBar(total)
            self.mm = comfy.model_management
        except ImportError:  # outside ComfyUI (tests, scripts)
            pass
        self.calls = 0

    def __call__(self, done: int, total: int, stage: str) -> None:
        self.calls += 1
        if self.mm is not None:
            self.mm.throw_exception_if_processing_interrupted()
        if self.bar is not None:
            self.bar.update_absolute(done + 1 if stage == "t2i" else done, total)


def _resolve_model_path(path: str) -> str:
    """An absolute/relative directory, else one under ComfyUI's models/lance folder."""
    path = os.path.expanduser(path.strip())
    if os.path.isdir(path):
        return path
    try:
        import folder_paths
        candidate = os.path.join(folder_paths.models_dir, "lance", path)
        if os.path.isdir(candidate):
            return candidate
    except ImportError:
        pass
    raise lance_quant.Error(f"[Lance loader] model directory '{path}' not found")


_cache_lock = threading.Lock()
_model_cache: Dict[tuple, lance_quant.Model] = {}


class LanceModelLoader:
    """Loads a Lance checkpoint (dense, or any quantized format lance-quant reads) into the native engine."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_path": ("STRING", {"default": "Lance_3B-awq-int4", "multiline": False,
                                          "tooltip": "model directory (or a folder name under models/lance)"}),
                "device": (list(lance_quant.DEVICES), {"default": "cpu"}),
                "dtype": (["f32", "bf16"], {"default": "bf16", "tooltip": "storage of the dense weights"}),
                "head": (["stored", "int4"], {"default": "stored",
                                              "tooltip": "int4: quantize the lm_head at load for faster text"}),
                "threads": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "0: all cores"}),
            }
        }

    RETURN_TYPES = ("LANCE_MODEL",)
    RETURN_NAMES = ("lance_model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads a Lance model (dense or 4-bit) for the lance_quant nodes."

    def load(self, model_path, device, dtype, head, threads):
        path = _resolve_model_path(model_path)
        if threads > 0:
            lance_quant.set_num_threads(threads)
        key = (os.path.realpath(path), device, dtype, head)
        with _cache_lock:
            model = _model_cache.get(key)
            if model is None:
                model = lance_quant.load(path, device=device, dtype=dtype, head=head)
                _model_cache.clear()  # keep one model resident
                _model_cache[key] = model
        return (model,)


class LanceTextToImage:
    """Lance's rectified-flow CFG sampler; returns a Wan 2.2 LATENT for ComfyUI's VAE Decode."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lance_model": ("LANCE_MODEL",),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": ""}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 1000}),
                "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "shift": ("FLOAT", {"default": 3.5, "min": 0.01, "max": 100.0, "step": 0.05}),
                "width": ("INT", {"default": 768, "min": 16, "max": 1008, "step": 16}),
                "height": ("INT", {"default": 768, "min": 16, "max": 1008, "step": 16}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Text-to-image with Lance's backbone. Image i of the batch uses noise seed + i. The LATENT is "
                   "[B, 48, 1, H/16, W/16] in the Wan 2.2 VAE's space: decode it with VAE Decode + the Wan 2.2 VAE.")

    def sample(self, lance_model, prompt, seed, steps, cfg, shift, width, height, batch_size):
        if lance_model.latent_channels != len(WAN22_MEAN):
            raise lance_quant.Error(f"[Lance text to image] the model has {lance_model.latent_channels} latent channels, "
                                    f"not the Wan 2.2 VAE's {len(WAN22_MEAN)}")
        progress = _Progress(steps * batch_size)
        out = []
        for i in range(batch_size):
            def cb(done, total, stage, i=i):
                progress(i * total + done, total * batch_size, stage)
            x = lance_model.text_to_image(prompt, seed=(seed + i) % (1 << 64), steps=steps, cfg=cfg, shift=shift,
                                          height=height, width=width, progress=cb)
            out.append(lance_to_latent(x))
        return ({"samples": torch.stack(out)},)


class LanceTextGenerate:
    """Greedy text answers (understanding path); the visual-QA input waits for the native vision tower."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lance_model": ("LANCE_MODEL",),
                "prompt": ("STRING", {"multiline": True, "default": ""}),
                "max_new_tokens": ("INT", {"default": 256, "min": 1, "max": 8192}),
                "chat_template": ("BOOLEAN", {"default": True}),
            },
            "optional": {
                "image": ("IMAGE",),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "generate"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Answers a question (Qwen chat template, greedy, KV cache). Image questions need the vision tower."

    def generate(self, lance_model, prompt, max_new_tokens, chat_template, image=None):
        if image is not None:
            raise lance_quant.Error("[Lance text] visual QA needs Lance's vision tower (ViT), which the native engine "
                                    "does not run yet: disconnect the image to ask a text question")
        res = lance_model.generate(prompt, max_new_tokens=max_new_tokens, raw=not chat_template)
        return {"ui": {"text": [res["text"]]}, "result": (res["text"],)}


class LanceQuantize:
    """Quantizes a Lance checkpoint (lance-quant quantize) and returns the new directory and its report."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_path": ("STRING", {"default": "Lance_3B"}),
                "out_dir": ("STRING", {"default": "Lance_3B-awq-int4"}),
                "scheme": (["awq-int4", "rtn-int4", "nvfp4", "awq-nvfp4", "rtn-int8"], {"default": "awq-int4"}),
                "group_size": ("INT", {"default": 128, "min": 32, "max": 128, "step": 32}),
                "format": (["lance-quant-v1", "autoawq", "compressed-tensors", "modelopt"],
                           {"default": "lance-quant-v1"}),
                "calib_text": ("STRING", {"default": "", "tooltip": "text file (und path), for awq-*"}),
                "calib_t2i": ("STRING", {"default": "", "tooltip": "t2i prompts, one per line (gen path), for awq-*"}),
                "force": ("BOOLEAN", {"default": False, "tooltip": "replace an existing output directory"}),
            }
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("checkpoint_dir", "report_json")
    FUNCTION = "quantize"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Writes a 4-bit checkpoint (layer by layer, AWQ on real activations of both paths)."

    def quantize(self, model_path, out_dir, scheme, group_size, format, calib_text, calib_t2i, force):
        model = _resolve_model_path(model_path)
        calib = []
        if calib_text.strip():
            calib.append("text:" + calib_text.strip())
        if calib_t2i.strip():
            calib.append("t2i:" + calib_t2i.strip())
        progress = _Progress(1)
        rep = lance_quant.quantize(model, os.path.expanduser(out_dir.strip()), scheme=scheme, group_size=group_size,
                                   format=format, calib=calib, force=force, progress=progress)
        text = json.dumps(rep, indent=2)
        return {"ui": {"text": [f"{rep['quantized_linears']} linears -> {rep['out']} ({rep['output_bytes']} bytes)"]},
                "result": (rep["out"], text)}


class LanceToyVAEDecode:
    """Decodes lance-mini's latents (its toy patch "VAE") to an IMAGE; real Lance uses ComfyUI's Wan 2.2 VAE."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "lance_model": ("LANCE_MODEL",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = "For lance-mini only (lance_config.json 'toy_vae'): 4x4-pixel patches per latent token."

    def decode(self, samples, lance_model):
        toy = lance_quant.t2i_settings(lance_model.path)["toy_vae"]
        if toy is None:
            raise lance_quant.Error("[Lance toy VAE decode] this model has no toy VAE: use VAE Decode with the Wan 2.2 VAE")
        z = latent_to_lance(samples["samples"].float().cpu())  # [B, T, H, W, 48]
        images = []
        for b in range(z.shape[0]):
            for t in range(z.shape[1]):
                px = lance_quant.toy_vae_decode(z[b, t:t + 1].numpy(), toy["patch"], toy["mean"], toy["std"])
                images.append(torch.from_numpy(px))
        return (torch.stack(images),)


NODE_CLASS_MAPPINGS = {
    "LanceModelLoader": LanceModelLoader,
    "LanceTextToImage": LanceTextToImage,
    "LanceTextGenerate": LanceTextGenerate,
    "LanceQuantize": LanceQuantize,
    "LanceToyVAEDecode": LanceToyVAEDecode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LanceModelLoader": "Lance Model Loader (lance-quant)",
    "LanceTextToImage": "Lance Text to Image (lance-quant)",
    "LanceTextGenerate": "Lance Text / Visual QA (lance-quant)",
    "LanceQuantize": "Lance Quantize (lance-quant)",
    "LanceToyVAEDecode": "Lance Toy VAE Decode (lance-mini)",
}
