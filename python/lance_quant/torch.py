"""PyTorch drop-in for lance-quant checkpoints: a 4-bit ``nn.Module`` linear on the fused C++ kernels.

* :class:`QuantLinear` - ``y = x W^T + b`` with W kept in the kernels' packed 4-bit layout (INT4 group
  64k in the "Lanes" layout, NVFP4; INT8 runs as bf16) and decoded inside the dot products, never
  materialised. Its forward is the registered custom op ``torch.ops.lance_quant.q4_linear`` (CPU
  tensors; any leading batch dims; float32 math, the output in the input's dtype), with a fake
  implementation so ``torch.compile`` can trace models that use it.
* :func:`patch_linears` - replaces every ``nn.Linear`` of a module whose qualified name matches a
  quantized linear of a checkpoint (both Lance paths: ``...q_proj`` and ``...q_proj_moe_gen``), and by
  default also loads the checkpoint's other tensors whose names match (AWQ folds its scales into the
  norms next to the linears, so those must come from the same checkpoint).

The original Python toolkit's ``WQLinear`` dequantized the whole weight on every call; this module
streams 4.5 bits per weight through the kernels instead (bench/torch_quant_linear.py measures both).
There is no CUDA backend yet: CUDA tensors raise an error naming the op.
"""
from __future__ import annotations

import itertools
import os
import threading
import warnings
import weakref
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import _core

__all__ = ["QuantLinear", "patch_linears", "names_match"]

# PackedLinear objects by handle: the custom op takes an int (ops cannot take arbitrary objects).
_registry: Dict[int, _core.PackedLinear] = {}
_registry_lock = threading.Lock()
_handles = itertools.count(1)


def _register(packed: _core.PackedLinear) -> int:
    with _registry_lock:
        h = next(_handles)
        _registry[h] = packed
    return h


def _unregister(h: int) -> None:
    with _registry_lock:
        _registry.pop(h, None)


def _q4_linear_cpu(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    """y[..., out] = x[..., in] W^T + b on the fused 4-bit kernels (W: the registered PackedLinear)."""
    packed = _registry.get(handle)
    if packed is None:
        raise _core.Error(f"[lance_quant::q4_linear] no packed linear with handle {handle} (module was freed)")
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if x2.dtype != torch.float32:
        x2 = x2.to(torch.float32)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    y = torch.empty((x2.shape[0], out_features), dtype=torch.float32)
    if x2.shape[0] > 0:
        packed.apply(x2.numpy(), y.numpy())  # zero-copy views; the GIL is released in C++
    if x.dim() != 2:
        y = y.reshape(*x.shape[:-1], out_features)
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def _q4_linear_fake(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


# The op is defined with torch.library.Library (a CPU kernel and a fake kernel for torch.compile / meta
# tensors) rather than torch.library.custom_op, whose extra Python layers cost ~2.5x more per call.
if not hasattr(torch.ops.lance_quant, "q4_linear"):
    _lib = torch.library.Library("lance_quant", "DEF")
    _lib.define("q4_linear(Tensor x, int handle, int out_features) -> Tensor")
    _lib.impl("q4_linear", _q4_linear_cpu, "CPU")
    torch.library.register_fake("lance_quant::q4_linear", _q4_linear_fake, lib=_lib)
q4_linear = torch.ops.lance_quant.q4_linear


class QuantLinear(nn.Module):
    """A quantized ``nn.Linear`` replacement running lance-quant's fused 4-bit CPU kernels.

    Build it with :meth:`from_checkpoint` (a linear of a lance-quant checkpoint), :meth:`from_int4`
    (codes, scales and zero points) or from a :class:`lance_quant.PackedLinear`. ``extra_bias`` is
    added when the packed weight has no bias of its own (e.g. a model whose linear has a bias that the
    checkpoint does not store). The module has no trainable parameters.
    """

    def __init__(self, packed: _core.PackedLinear, extra_bias: Optional[torch.Tensor] = None):
        super().__init__()
        self.in_features = int(packed.in_features)
        self.out_features = int(packed.out_features)
        self.packed = packed
        self._handle = _register(packed)
        self._finalizer = weakref.finalize(self, _unregister, self._handle)
        if extra_bias is not None and packed.has_bias:
            raise _core.Error(f"[QuantLinear] {packed.name} already has a bias")
        if extra_bias is not None:
            self.register_buffer("extra_bias", extra_bias.detach().to(torch.float32).clone(), persistent=False)
        else:
            self.extra_bias = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Union[str, os.PathLike, _core.Checkpoint], name: str) -> "QuantLinear":
        """The quantized linear ``name`` (module name without ``.weight``) of a checkpoint directory."""
        ck = checkpoint if isinstance(checkpoint, _core.Checkpoint) else _core.Checkpoint(os.fspath(checkpoint))
        return cls(ck.packed_linear(name))

    @classmethod
    def from_int4(cls, codes, scales, zeros, group_size: int, bias=None, name: str = "QuantLinear") -> "QuantLinear":
        """Asymmetric INT4, w = (code - zero) * scale: codes [out, in] (0..15), scales [out, in/group]
        (float32), zeros [out, in/group] (0..15), optional bias [out]. Arrays or CPU tensors."""
        def arr(a, dtype):
            if isinstance(a, torch.Tensor):
                a = a.detach().cpu().numpy()
            return np.ascontiguousarray(a, dtype=dtype)

        b = None if bias is None else arr(bias, np.float32)
        return cls(_core.PackedLinear.from_int4(arr(codes, np.uint8), arr(scales, np.float32), arr(zeros, np.uint8),
                                                int(group_size), b, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise _core.Error(f"[QuantLinear] {self.packed.name}: input on {x.device}, but lance-quant has only the CPU "
                              "backend so far")
        y = torch.ops.lance_quant.q4_linear(x, self._handle, self.out_features)
        if self.extra_bias is not None:
            y = y + self.extra_bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.packed.scheme}, "
                f"group_size={self.packed.group_size}, bias={self.packed.has_bias or self.extra_bias is not None}, "
                f"kernel={_core.kernel_path()}")


def names_match(module_name: str, checkpoint_name: str) -> bool:
    """True when one name is the other, or ends with it after a '.' (prefixes such as ``language_model.``
    or a wrapper's ``model.`` may differ; the tail, e.g. ``layers.3.self_attn.q_proj_moe_gen``, must not)."""
    if module_name == checkpoint_name:
        return True
    return checkpoint_name.endswith("." + module_name) or module_name.endswith("." + checkpoint_name)


def _match(targets: Iterable[str], names: List[str], what: str) -> Dict[str, str]:
    """target name -> the one name of `names` it matches (exact matches win; ambiguity is an error)."""
    by_tail: Dict[str, List[str]] = {}
    for n in names:
        by_tail.setdefault(n.rsplit(".", 1)[-1], []).append(n)
    out: Dict[str, str] = {}
    for t in targets:
        cands = [n for n in by_tail.get(t.rsplit(".", 1)[-1], []) if names_match(n, t)]
        if not cands:
            continue
        exact = [n for n in cands if n == t]
        if exact:
            cands = exact
        if len(cands) > 1:
            raise _core.Error(f"[patch_linears] checkpoint {what} '{t}' matches several module names: {cands[:4]}")
        out[t] = cands[0]
    return out


def patch_linears(module: nn.Module, checkpoint_dir: Union[str, os.PathLike], *, load_other_tensors: bool = True
                  ) -> Dict[str, List[str]]:
    """Replaces every ``nn.Linear`` of ``module`` whose qualified name matches a quantized linear of the
    checkpoint by a :class:`QuantLinear` holding that linear (its stored bias included).

    With ``load_other_tensors`` (default) every other checkpoint tensor whose name matches a parameter or
    buffer of the module (norms, embeddings, lm_head, ...) is copied into it: an AWQ checkpoint's norms
    carry folded scales, so patching only the linears of the original model would compute something
    else (a warning says so when this is turned off on such a checkpoint). Shapes must agree.

    Returns {"replaced": module names, "loaded": parameter names, "unmatched_linears": checkpoint linears
    with no matching module}. Raises :class:`lance_quant.Error` when nothing matches or shapes differ.
    """
    ck = _core.Checkpoint(os.fspath(checkpoint_dir))
    qlin = {d["name"]: d for d in ck.quantized_linears()}
    if not qlin:
        raise _core.Error(f"[patch_linears] {os.fspath(checkpoint_dir)} holds no quantized linears")
    linears = {n: m for n, m in module.named_modules() if isinstance(m, nn.Linear)}
    matches = _match(qlin.keys(), list(linears.keys()), "linear")
    if not matches:
        sample = sorted(qlin)[:2]
        raise _core.Error(f"[patch_linears] no nn.Linear of the module matches a quantized linear of "
                          f"{os.fspath(checkpoint_dir)} (e.g. {sample})")
    replaced: List[str] = []
    for cname, mname in matches.items():
        lin = linears[mname]
        d = qlin[cname]
        if (lin.in_features, lin.out_features) != (d["in_features"], d["out_features"]):
            raise _core.Error(f"[patch_linears] {mname} is {lin.out_features}x{lin.in_features} but the checkpoint's "
                              f"{cname} is {d['out_features']}x{d['in_features']}")
        packed = ck.packed_linear(cname)
        extra = lin.bias if (lin.bias is not None and not packed.has_bias) else None
        q = QuantLinear(packed, extra_bias=extra)
        parent_name, _, child = mname.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, q)
        replaced.append(mname)

    loaded: List[str] = []
    if load_other_tensors:
        params: Dict[str, torch.Tensor] = dict(module.named_parameters())
        params.update(dict(module.named_buffers()))
        plain = [t for t in ck.tensor_names() if t.rsplit(".", 1)[0] not in qlin]
        for tname, pname in _match(plain, list(params.keys()), "tensor").items():
            p = params[pname]
            shape = tuple(ck.shape(tname))
            if tuple(p.shape) != shape:
                raise _core.Error(f"[patch_linears] {pname} has shape {tuple(p.shape)} but the checkpoint's {tname} "
                                  f"is {shape}")
            with torch.no_grad():
                p.copy_(torch.from_numpy(ck.read(tname)).to(p.dtype))
            loaded.append(pname)
    elif os.path.exists(os.path.join(os.fspath(checkpoint_dir), "lance-quant.fold-scales")):
        warnings.warn(f"{os.fspath(checkpoint_dir)} was quantized with AWQ folds: its norms and other tensors "
                      "differ from the original model's; with load_other_tensors=False the patched module "
                      "computes something else unless it already holds the checkpoint's tensors")
    unmatched = sorted(set(qlin) - set(matches))
    return {"replaced": replaced, "loaded": loaded, "unmatched_linears": unmatched}
