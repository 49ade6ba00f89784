"""lance_quant: quantize and run ByteDance's Lance with the native C++ engine.

The functions here call the C++ library directly (not the CLI), release the GIL while they compute,
return numpy arrays that own the engine's buffers (no copies; ``torch.from_numpy`` / DLPack share them
too), and raise :class:`Error` with the C++ message when an input is bad::

    import lance_quant as lq
    m = lq.load("lance-mini")                       # dense or quantized checkpoint directory
    m.generate("What is 2 + 2?")["text"]            # greedy answer (chat template)
    m.logits(m.tokenize("Once upon a time"))        # float32 [n, vocab]
    x = m.text_to_image("a red circle", seed=1)     # float32 [t, h, w, 48] latents
    vae = lq.load_vae("Wan2.2_VAE.pth")             # native Wan2.2 VAE
    lq.to_pil(vae.decode(x))                        # PIL image (uint8 [T, H, W, 3] from decode)
    v = m.text_to_video("a boat at sea", seed=1, frames=33); vae.write(v, mp4="boat.mp4")
    y, info = m.edit("make it night", seed=1, vae=vae, image="photo.jpg")   # or a numpy / PIL image
    m.understand("What is in the picture?", image="photo.jpg")["text"]     # ViT + x2t prompt
    lq.quantize("lance-mini", "mini-awq", scheme="awq-int4", group_size=64,
                calib=["text:data/calib/text.txt", "t2i:data/calib/t2i_toy_prompts.txt"],
                progress=lambda done, total, stage: print(stage, done, total))

``calibrate``, ``quantize`` and ``evaluate`` return the same JSON documents as the CLI's ``--json``
(``evaluate``: the report.json it writes). Progress callbacks are called as ``progress(done, total,
stage)`` on the calling thread; an exception raised there (e.g. KeyboardInterrupt) stops the work.

Submodules: :mod:`lance_quant.torch` (a PyTorch drop-in 4-bit linear and ``patch_linears``) and
:mod:`lance_quant.coreml` (Core ML export of the understanding path; needs coremltools).
"""
from __future__ import annotations

import os
from typing import Optional, Union

from ._core import (  # noqa: F401  (re-exported)
    Checkpoint,
    Error,
    Model,
    PackedLinear,
    Vae,
    Vit,
    calibrate,
    evaluate,
    kernel_path,
    model_config,
    num_threads,
    quantize,
    set_num_threads,
    t2i_settings,
    toy_vae_decode,
    write_mp4,
    write_png,
)
from . import _core

__all__ = [
    "Checkpoint",
    "Error",
    "Model",
    "PackedLinear",
    "calibrate",
    "evaluate",
    "kernel_path",
    "load",
    "model_config",
    "num_threads",
    "quantize",
    "set_num_threads",
    "t2i_settings",
    "toy_vae_decode",
    "Vae",
    "Vit",
    "load_vae",
    "load_vit",
    "to_pil",
    "write_mp4",
    "write_png",
]

__version__ = "0.1.0"

DEVICES = ("cpu",)


def load(
    path: Union[str, os.PathLike],
    device: str = "cpu",
    *,
    dtype: str = "f32",
    head: str = "stored",
    threads: Optional[int] = None,
    num_layers: int = -1,
) -> Model:
    """Loads a Lance model directory into the native engine and returns a :class:`Model`.

    path: a dense checkpoint (model.safetensors + llm_config.json + tokenizer) or a quantized one that
        ``lance-quant quantize`` wrote (lance-quant-v1, autoawq, compressed-tensors, modelopt): its
        linears then run on the fused 4-bit kernels.
    device: "cpu" (the only backend this build has; other devices raise :class:`Error`).
    dtype: storage of the dense weights, "f32" (default; F32 files are used in place) or "bf16".
    head: "stored" (lm_head as the checkpoint holds it) or "int4" (quantized at load for faster decoding).
    threads: kernel threads (default: all cores); results do not depend on it.
    num_layers: load only the first N decoder layers (benchmarks); -1 = all.
    """
    if device not in DEVICES:
        raise Error(f"[load] device '{device}' is not available: this build runs on {', '.join(DEVICES)} "
                    "(there is no CUDA backend yet)")
    if threads is not None:
        set_num_threads(int(threads))
    return _core._load(os.fspath(path), dtype=dtype, head=head, num_layers=num_layers)


def load_vae(path: Union[str, os.PathLike], *, conv: str = "auto") -> Vae:
    """Loads the Wan2.2 VAE: a diffusers directory (config.json + diffusion_pytorch_model.safetensors), a
    diffusers-named .safetensors file, Wan's Wan2.2_VAE.pth, a directory holding it, or ``synth-vae`` output.
    Every tensor is checked by name and shape before any weight is read. conv: the convolution backend
    ("auto", "gemm", "dnnl")."""
    return _core._load_vae(os.fspath(path), conv=conv)


def load_vit(path: Union[str, os.PathLike], *, dtype: str = "f32") -> Vit:
    """Loads Lance's vision tower: a ViT directory (vit.safetensors + config.json, as Lance_3B keeps it) or a
    checkpoint with vit_model.* tensors. Pass it to :meth:`Model.understand` (``vit=``); without one, a
    model uses its own vit_model.* tensors."""
    return _core._load_vit(os.fspath(path), dtype=dtype)


def _as_uint8_rgb(img):
    """A PIL image, or an array [H, W, 3] / [H, W, 4] / [H, W] (uint8, or float in 0..1; numpy, torch or
    anything numpy can read) -> uint8 [H, W, 3] (C-contiguous)."""
    import numpy as np
    if hasattr(img, "convert") and hasattr(img, "size"):  # PIL
        img = img.convert("RGB")
    if hasattr(img, "detach"):  # torch
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise Error(f"[image] expected [H, W, 3] pixels, got shape {tuple(a.shape)}")
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise Error(f"[image] expected uint8 or float pixels in 0..1, got {a.dtype}")
        # ComfyUI IMAGE / float pixels: 0..1 -> 0..255, rounded (as PIL's Image.fromarray(np.clip(255 * x)) users do)
        a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


class _Media:
    """A file path as given, or pixels written to a temporary PNG (one image) / folder of PNGs (frames):
    the native readers then decode them exactly as they decode user files (8-bit RGB PNG is lossless)."""

    def __init__(self, value, video: bool):
        self.value, self.video, self.tmp = value, video, None

    def __enter__(self) -> str:
        import tempfile
        if self.value is None:
            return ""
        if isinstance(self.value, (str, os.PathLike)):
            return os.fspath(self.value)
        self.tmp = tempfile.TemporaryDirectory(prefix="lance_quant_")
        if self.video:
            frames = self.value
            if hasattr(frames, "detach"):
                frames = frames.detach().cpu().numpy()
            if not isinstance(frames, (list, tuple)):
                import numpy as np
                frames = list(np.asarray(frames)) if np.asarray(frames).ndim == 4 else [frames]
            for i, f in enumerate(frames):
                write_png(_as_uint8_rgb(f), os.path.join(self.tmp.name, f"frame_{i:05d}.png"))
            return self.tmp.name
        path = os.path.join(self.tmp.name, "image.png")
        write_png(_as_uint8_rgb(self.value), path)
        return path

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.cleanup()


def _understand(self, question: str, image=None, video=None, *, vit: Optional[Vit] = None, system: str = "",
                resolution: int = 0, fps: float = 24.0, max_new_tokens: int = 256) -> dict:
    """Answers a question about an image or a video (``run --task x2t``): the ViT's tokens in Lance's
    understanding prompt, greedy decoding with a KV cache.

    image: a file path, a PIL image or pixels [H, W, 3] (uint8, or float 0..1 as a ComfyUI IMAGE).
    video: a video file, a folder of frames, or frames [T, H, W, 3] / a list of images (a folder at ``fps``).
    vit: a :class:`Vit` from :func:`load_vit`; default the model's own vit_model.* tensors (loaded once).
    Returns the dict ``run --task x2t --json`` prints: text, generated_ids, prompt_tokens, vit_tokens,
    grid_thw, frames, vit_seconds, seconds."""
    if (image is None) == (video is None):
        raise Error("[understand] give exactly one of image= or video=")
    with _Media(image, False) as ipath, _Media(video, True) as vpath:
        return self._understand(question, image=ipath, video=vpath, vit=vit, system=system, resolution=resolution,
                                fps=fps, max_new_tokens=max_new_tokens)


def _edit(self, prompt: str, seed: int, vae: Vae, image=None, video=None, *, resolution: int = 0,
          max_frames: int = 0, steps: Optional[int] = None, cfg: Optional[float] = None,
          shift: Optional[float] = None, cfg_min: Optional[float] = None, cfg_max: Optional[float] = None,
          fps: float = 24.0, progress=None, vit: Optional[str] = None, vit_resolution: int = 0,
          no_vit_reference: bool = False):
    """Edits an image or a video (``run --task edit``): the source is resized to Lance's bucket near
    resolution^2 pixels (default 768 images / 640 videos), VAE-encoded (reparameterised sample, noise from
    ``seed``) and given as a clean condition block; the target has the source's size. As in Lance the same
    frames also go through the ViT as a reference block: ``vit`` names a ViT directory (vit.safetensors +
    config.json; default: the checkpoint's vit_model.* tensors) and ``vit_resolution`` its resolution (0:
    paired with the VAE's); without a ViT the edit is refused unless ``no_vit_reference=True``.

    image: a file path, a PIL image or pixels [H, W, 3] (uint8, or float 0..1 as a ComfyUI IMAGE).
    video: a video file, a folder of frames, or frames [T, H, W, 3] / a list of images (a folder at ``fps``;
        Lance samples 12 fps over at most 6 s).
    Returns (latents [t, h, w, C], info dict: source, source_frames, source_size, vit_reference).
    Decode the latents with ``vae.decode`` / ``vae.write``. progress(step, steps, 'edit') before each step."""
    if (image is None) == (video is None):
        raise Error("[edit] give exactly one of image= or video=")
    with _Media(image, False) as ipath, _Media(video, True) as vpath:
        return self._edit(prompt, seed, vae, image=ipath, video=vpath, resolution=resolution, max_frames=max_frames,
                          fps=fps, steps=steps, cfg=cfg, shift=shift, cfg_min=cfg_min, cfg_max=cfg_max,
                          progress=progress, vit_dir=os.fspath(vit) if vit else "", vit_resolution=vit_resolution,
                          no_vit_reference=no_vit_reference)


Model.understand = _understand
Model.edit = _edit


def to_pil(frames):
    """uint8 pixels [H, W, 3] -> a PIL image; frames [T, H, W, 3] -> a list of PIL images (needs pillow)."""
    import numpy as np
    from PIL import Image
    a = np.asarray(frames)
    if a.ndim == 3:
        return Image.fromarray(a, "RGB")
    if a.ndim == 4:
        return [Image.fromarray(f, "RGB") for f in a]
    raise Error(f"[to_pil] expected [H, W, 3] or [T, H, W, 3], got shape {tuple(a.shape)}")
