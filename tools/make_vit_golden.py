#!/usr/bin/env python3
"""Golden for the native ViT: a small random Qwen2.5-VL vision tower run by Hugging Face transformers.

The configuration exercises what the real tower does: window attention (2 x 2 merged units per window
here) with partial windows at the bottom and right edges, a grid whose sides divide the window (an empty
padded window row and column, as get_window_index makes), full attention in one block, 2 temporal
patches, the 2 x 2 merger with exact GELU. Weights are random with norms around 1 and non-zero biases.

Writes DIR/vit.safetensors + DIR/config.json (a ViT directory as Lance keeps one) and DIR/golden.safetensors
(inputs_N [patches, patch_dim], grid_N (t, h, w), outputs_N [patches / 4, out]) for N = 0, 1.

usage: /work/venv-dev/bin/python tools/make_vit_golden.py OUT_DIR   (torch, transformers, safetensors)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

CONFIG = dict(
    depth=3,
    hidden_size=32,
    hidden_act="silu",
    intermediate_size=44,
    num_heads=2,
    in_channels=3,
    patch_size=4,
    spatial_merge_size=2,
    temporal_patch_size=2,
    tokens_per_second=2,
    window_size=16,  # pixels: 16 / 2 / 4 = 2 merged units per window side
    out_hidden_size=24,
    fullatt_block_indexes=[1],
)
GRIDS = [(2, 10, 6), (1, 8, 8)]  # (t, h, w) in patches


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1234)
    cfg = Qwen2_5_VLVisionConfig(**CONFIG, rope_parameters={"rope_theta": 10000.0, "rope_type": "axial"})
    cfg._attn_implementation = "eager"
    model = Qwen2_5_VisionTransformerPretrainedModel(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("ln_q.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "vit.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(CONFIG, model_type="qwen2_5_vl", rope_theta=10000.0), f, indent=2)

    golden = {}
    patch_dim = CONFIG["in_channels"] * CONFIG["temporal_patch_size"] * CONFIG["patch_size"] ** 2
    for n, (t, h, w) in enumerate(GRIDS):
        x = torch.randn(t * h * w, patch_dim)
        grid = torch.tensor([[t, h, w]], dtype=torch.long)
        with torch.no_grad():
            y = model(x, grid_thw=grid)
        y = y.pooler_output if hasattr(y, "pooler_output") else y
        golden[f"inputs_{n}"] = x.contiguous()
        golden[f"grid_{n}"] = torch.tensor([t, h, w], dtype=torch.float32)
        golden[f"outputs_{n}"] = y.float().contiguous()
    import transformers

    save_file(golden, os.path.join(out, "golden.safetensors"),
              metadata={"producer": "tools/make_vit_golden.py", "transformers": transformers.__version__,
                        "torch": torch.__version__})
    print("wrote", out, {k: tuple(v.shape) for k, v in golden.items()})


if __name__ == "__main__":
    main()
