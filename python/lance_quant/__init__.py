"""lance_quant: quantize and run ByteDance's Lance with the native C++ engine.

The functions here call the C++ library directly (not the CLI), release the GIL while they compute,
return numpy arrays that own the engine's buffers (no copies; ``torch.from_numpy`` / DLPack share them
too), and raise :class:`Error` with the C++ message when an input is bad::

    import lance_quant as lq
    m = lq.load("lance-mini")                       # dense or quantized checkpoint directory
    m.generate("What is 2 + 2?")["text"]            # greedy answer (chat template)
    m.logits(m.tokenize("Once upon a time"))        # float32 [n, vocab]
    x = m.text_to_image("a red circle", seed=1)     # float32 [t, h, w, 48] latents
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
    calibrate,
    evaluate,
    kernel_path,
    model_config,
    num_threads,
    quantize,
    set_num_threads,
    t2i_settings,
    toy_vae_decode,
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
