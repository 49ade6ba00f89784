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


# Inputs the sampler nodes share (text to image / video, image edit), in their display order.
_SEED = {"seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})}


def _sampler_inputs():
    return {
        "steps": ("INT", {"default": 30, "min": 1, "max": 1000}),
        "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
        "shift": ("FLOAT", {"default": 3.5, "min": 0.01, "max": 100.0, "step": 0.05}),
    }


def _size_inputs(width, height):
    return {
        "width": ("INT", {"default": width, "min": 16, "max": 1008, "step": 16}),
        "height": ("INT", {"default": height, "min": 16, "max": 1008, "step": 16}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
    }


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
            self.bar.update_absolute(done + 1 if stage in ("t2i", "t2v", "edit") else done, total)


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
                **_SEED,
                **_sampler_inputs(),
                **_size_inputs(768, 768),
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


def _images_u8(image: torch.Tensor):
    """ComfyUI IMAGE [B, H, W, 3] (0..1) -> uint8 numpy [B, H, W, 3] (rounded)."""
    import numpy as np
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        raise lance_quant.Error(f"[Lance] expected an IMAGE [B, H, W, 3], got {getattr(image, 'shape', type(image))}")
    x = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(x.numpy())


_vit_cache: Dict[str, lance_quant.Vit] = {}


def _vit(vit_path: str):
    """None (the model's own vit_model.* tensors) or a loaded ViT directory (one kept resident)."""
    vit_path = vit_path.strip()
    if not vit_path:
        return None
    key = os.path.realpath(os.path.expanduser(vit_path))
    with _cache_lock:
        if key not in _vit_cache:
            _vit_cache.clear()
            _vit_cache[key] = lance_quant.load_vit(key)
        return _vit_cache[key]


def _understand(model, question, image, as_video, fps, max_new_tokens, vit_path=""):
    frames = _images_u8(image)
    vit = _vit(vit_path)
    if as_video:
        return [model.understand(question, video=frames, fps=fps, vit=vit, max_new_tokens=max_new_tokens)["text"]]
    return [model.understand(question, image=f, vit=vit, max_new_tokens=max_new_tokens)["text"] for f in frames]


class LanceTextGenerate:
    """Greedy text answers (understanding path); with an IMAGE, a question about it (the model's own ViT)."""

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
    DESCRIPTION = ("Answers a question (Qwen chat template, greedy, KV cache). With an image: Lance's visual QA through "
                   "the checkpoint's vision tower (vit_model.*); use Lance Visual QA for a separate ViT or video.")

    def generate(self, lance_model, prompt, max_new_tokens, chat_template, image=None):
        if image is not None:
            answers = _understand(lance_model, prompt, image, False, 24.0, max_new_tokens)
            text = "\n\n".join(answers)
        else:
            text = lance_model.generate(prompt, max_new_tokens=max_new_tokens, raw=not chat_template)["text"]
        return {"ui": {"text": [text]}, "result": (text,)}


class LanceVisualQA:
    """Image / video understanding: the ViT's tokens in Lance's x2t prompt, greedy answer."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lance_model": ("LANCE_MODEL",),
                "image": ("IMAGE",),
                "question": ("STRING", {"multiline": True, "default": "Describe this image."}),
                "max_new_tokens": ("INT", {"default": 256, "min": 1, "max": 8192}),
                "as_video": ("BOOLEAN", {"default": False,
                                         "tooltip": "the batch is the frames of one video (else one answer per image)"}),
                "fps": ("FLOAT", {"default": 24.0, "min": 0.1, "max": 240.0, "step": 0.1,
                                  "tooltip": "frame rate of the frames (Lance samples 12 fps over at most 6 s)"}),
            },
            "optional": {
                "vit_path": ("STRING", {"default": "", "tooltip": "ViT directory (vit.safetensors + config.json); "
                                                                  "empty: the checkpoint's vit_model.* tensors"}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "answer"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("Answers a question about each image of the batch, or about the batch as a video (as_video). "
                   "Images are bucket-resized as Lance does (R = 672 images, 616 videos).")

    def answer(self, lance_model, image, question, max_new_tokens, as_video, fps, vit_path=""):
        answers = _understand(lance_model, question, image, as_video, fps, max_new_tokens, vit_path)
        text = "\n\n".join(answers)
        return {"ui": {"text": answers}, "result": (text,)}


class LanceVAELoader:
    """Loads the Wan 2.2 VAE into the native engine (for Lance Image Edit and Lance VAE Decode)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae_path": ("STRING", {"default": "Wan2.2_VAE.pth",
                                        "tooltip": "Wan2.2_VAE.pth, a diffusers directory, or a file under models/vae"}),
                "conv": (["auto", "gemm", "dnnl"], {"default": "auto", "tooltip": "convolution backend"}),
            }
        }

    RETURN_TYPES = ("LANCE_VAE",)
    RETURN_NAMES = ("lance_vae",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "The native Wan 2.2 VAE (every tensor checked by name and shape)."

    def load(self, vae_path, conv):
        path = os.path.expanduser(vae_path.strip())
        if not os.path.exists(path):
            try:
                import folder_paths
                candidate = folder_paths.get_full_path("vae", path)
                if candidate:
                    path = candidate
            except ImportError:
                pass
        return (lance_quant.load_vae(path, conv=conv),)


class LanceVAEDecode:
    """Decodes a Wan 2.2 LATENT [B, 48, T, H, W] with the native VAE to IMAGE frames [B * (4 (T - 1) + 1), 16 H, 16 W, 3]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "lance_vae": ("LANCE_VAE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Pictures and video frames exactly as `lance-quant run --png/--mp4` writes them (8-bit), as a "
                   "ComfyUI IMAGE in 0..1. A video's frames follow each other in the batch.")

    def decode(self, samples, lance_vae):
        z = latent_to_lance(samples["samples"].float().cpu())  # [B, T, H, W, 48]
        progress = _Progress(z.shape[0] * z.shape[1])
        frames = []
        for b in range(z.shape[0]):
            def cb(done, total, stage, b=b):
                progress(b * total + done, total * z.shape[0], stage)
            px = lance_vae.decode(z[b].numpy(), progress=cb)  # uint8 [T', H', W', 3]
            frames.append(torch.from_numpy(px).float().div_(255.0))
        return (torch.cat(frames),)


class LanceTextToVideo:
    """Lance's text-to-video sampler; returns a Wan 2.2 LATENT [B, 48, T, H, W] (T = (frames - 1) / 4 + 1)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lance_model": ("LANCE_MODEL",),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": ""}),
                **_SEED,
                "frames": ("INT", {"default": 33, "min": 1, "max": 1025, "step": 4,
                                   "tooltip": "pixel frames; Lance uses 4k + 1"}),
                **_sampler_inputs(),
                **_size_inputs(832, 480),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Text-to-video with Lance's backbone (its t2v instruction). Video i of the batch uses noise seed + i. "
                   "Decode with Lance VAE Decode (or ComfyUI's VAE Decode + the Wan 2.2 VAE).")

    def sample(self, lance_model, prompt, seed, frames, steps, cfg, shift, width, height, batch_size):
        _check_wan22(lance_model, "Lance text to video")
        progress = _Progress(steps * batch_size)
        out = []
        for i in range(batch_size):
            def cb(done, total, stage, i=i):
                progress(i * total + done, total * batch_size, stage)
            x = lance_model.text_to_video(prompt, seed=(seed + i) % (1 << 64), frames=frames, steps=steps, cfg=cfg,
                                          shift=shift, height=height, width=width, progress=cb)
            out.append(lance_to_latent(x))
        return ({"samples": torch.stack(out)},)


class LanceImageEdit:
    """Lance's image editing: the IMAGE is VAE-encoded as a clean condition; returns the edited Wan 2.2 LATENT."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lance_model": ("LANCE_MODEL",),
                "lance_vae": ("LANCE_VAE",),
                "image": ("IMAGE",),
                "instruction": ("STRING", {"multiline": True, "default": ""}),
                **_SEED,
                **_sampler_inputs(),
                "resolution": ("INT", {"default": 768, "min": 16, "max": 2048, "step": 16,
                                       "tooltip": "the source is resized to Lance's bucket near resolution^2 pixels"}),
            },
            "optional": {
                "vit_path": ("STRING", {"default": "", "tooltip": "ViT directory for Lance's reference block of the "
                                                                  "source; empty: the checkpoint's vit_model.* tensors"}),
                "vit_reference": ("BOOLEAN", {"default": True, "tooltip": "off: edit without the ViT reference "
                                                                          "(not Lance's conditioning)"}),
            },
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "edit"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Edits each image of the batch (noise seed + i). The result has the source's bucket size; decode it "
                   "with Lance VAE Decode. As in Lance the source also goes through the ViT as a reference block.")

    def edit(self, lance_model, lance_vae, image, instruction, seed, steps, cfg, shift, resolution, vit_path="",
             vit_reference=True):
        _check_wan22(lance_model, "Lance image edit")
        frames = _images_u8(image)
        progress = _Progress(steps * len(frames))
        out = []
        for i, f in enumerate(frames):
            def cb(done, total, stage, i=i):
                progress(i * total + done, total * len(frames), stage)
            x, _ = lance_model.edit(instruction, seed=(seed + i) % (1 << 64), vae=lance_vae, image=f,
                                    resolution=resolution, steps=steps, cfg=cfg, shift=shift, progress=cb,
                                    vit=vit_path.strip() or None, no_vit_reference=not vit_reference)
            out.append(lance_to_latent(x))
        return ({"samples": torch.stack(out)},)


class LanceSaveVideo:
    """Writes IMAGE frames as an H.264 MP4 into ComfyUI's output folder (the writer `run --mp4` uses)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "lance"}),
                "fps": ("INT", {"default": 12, "min": 1, "max": 240, "tooltip": "Lance saves at 12"}),
            }
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "MP4 of the frames (even width and height)."

    def save(self, images, filename_prefix, fps):
        try:
            import folder_paths
            out_dir = folder_paths.get_output_directory()
        except ImportError:
            out_dir = os.getcwd()
        os.makedirs(out_dir, exist_ok=True)
        i = 0
        while os.path.exists(os.path.join(out_dir, f"{filename_prefix}_{i:05d}.mp4")):
            i += 1
        name = f"{filename_prefix}_{i:05d}.mp4"
        info = lance_quant.write_mp4(_images_u8(images), os.path.join(out_dir, name), fps=fps)
        return {"ui": {"videos": [{"filename": name, "subfolder": "", "type": "output"}], "text": [json.dumps(info)]},
                "result": ()}


def _check_wan22(model, where):
    if model.latent_channels != len(WAN22_MEAN):
        raise lance_quant.Error(f"[{where}] the model has {model.latent_channels} latent channels, "
                                f"not the Wan 2.2 VAE's {len(WAN22_MEAN)}")


class LanceQuantize:
    """Quantizes a Lance checkpoint (lance-quant quantize) and returns the new directory and its report."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_path": ("STRING", {"default": "Lance_3B"}),
                "out_dir": ("STRING", {"default": "Lance_3B-awq-int4"}),
                "scheme": (["awq-int4", "rtn-int4", "gptq-int4", "awq-gptq-int4", "nvfp4", "awq-nvfp4", "gptq-nvfp4",
                            "awq-gptq-nvfp4", "rtn-int8"], {"default": "awq-int4"}),
                "group_size": ("INT", {"default": 128, "min": 32, "max": 128, "step": 32,
                                       "tooltip": "INT4 / INT8 elements per scale (NVFP4: fixed blocks of 16)"}),
                "format": (["lance-quant-v1", "autoawq", "compressed-tensors", "modelopt"],
                           {"default": "lance-quant-v1"}),
                "calib_text": ("STRING", {"default": "", "tooltip": "text file (und path), for awq-*"}),
                "calib_t2i": ("STRING", {"default": "", "tooltip": "t2i prompts, one per line (gen path), for awq-*"}),
                "force": ("BOOLEAN", {"default": False, "tooltip": "replace an existing output directory"}),
            },
            "optional": {
                "bpw": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 16.0, "step": 0.05,
                                  "tooltip": "mixed precision under this many bits per weight (0: off; needs calib)"}),
            },
        }

    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("checkpoint_dir", "report_json")
    FUNCTION = "quantize"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Writes a 4-bit checkpoint (layer by layer, AWQ on real activations of both paths)."

    def quantize(self, model_path, out_dir, scheme, group_size, format, calib_text, calib_t2i, force, bpw=0.0):
        model = _resolve_model_path(model_path)
        calib = []
        if calib_text.strip():
            calib.append("text:" + calib_text.strip())
        if calib_t2i.strip():
            calib.append("t2i:" + calib_t2i.strip())
        progress = _Progress(1)
        # NVFP4 has fixed blocks of 16: the group size applies to the integer schemes only.
        group = None if "nvfp4" in scheme else group_size
        rep = lance_quant.quantize(model, os.path.expanduser(out_dir.strip()), scheme=scheme, group_size=group,
                                   format=format, calib=calib, force=force, bpw=bpw, progress=progress)
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
    "LanceVisualQA": LanceVisualQA,
    "LanceVAELoader": LanceVAELoader,
    "LanceVAEDecode": LanceVAEDecode,
    "LanceTextToVideo": LanceTextToVideo,
    "LanceImageEdit": LanceImageEdit,
    "LanceSaveVideo": LanceSaveVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LanceModelLoader": "Lance Model Loader (lance-quant)",
    "LanceTextToImage": "Lance Text to Image (lance-quant)",
    "LanceTextGenerate": "Lance Text / Visual QA (lance-quant)",
    "LanceQuantize": "Lance Quantize (lance-quant)",
    "LanceToyVAEDecode": "Lance Toy VAE Decode (lance-mini)",
    "LanceVisualQA": "Lance Visual QA (lance-quant)",
    "LanceVAELoader": "Lance Wan 2.2 VAE Loader (lance-quant)",
    "LanceVAEDecode": "Lance VAE Decode (lance-quant)",
    "LanceTextToVideo": "Lance Text to Video (lance-quant)",
    "LanceImageEdit": "Lance Image Edit (lance-quant)",
    "LanceSaveVideo": "Lance Save Video MP4 (lance-quant)",
}
