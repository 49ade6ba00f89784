#!/usr/bin/env python3
"""Golden files for the native Wan2.2 VAE (src/vae) and the torch.save reader (src/io/torch_checkpoint).

Builds diffusers' AutoencoderKLWan in its Wan2.2 configuration (residual blocks, 2x2 patchify,
temporal down-sampling in the last two stages, z_dim 48 with Wan2.2's latent means/stds, encoder and
decoder of different widths) with reduced channel counts and random weights, and writes:

  OUT/wan_vae_tiny/config.json + diffusion_pytorch_model.safetensors   the diffusers layout (F16 weights)
  OUT/wan_vae_tiny.pth         the same weights, torch.save'd under Wan's original names (vae2_2.py's
                               WanVAE_ state dict), F16 storages
  OUT/wan_vae_tiny_io.safetensors  inputs and diffusers' outputs, channels-last as lance-quant uses them:
      image_latents [1,h,w,48] -> image_decoded [1,H,W,3]     (one 32x48 picture)
      video_latents [3,h,w,48] -> video_decoded [9,H,W,3]     (9 frames = 3 decoder chunks)
      image_pixels [1,H,W,3]   -> image_mu, image_logvar [1,h,w,48]
      video_pixels [9,H,W,3]   -> video_mu, video_logvar [3,h,w,48]   (encoder chunks 1 + 4 + 4)
    latents are Lance's normalised latents ((mu - mean) / std); decode = diffusers decode of
    latents * std + mean (clamped to [-1, 1]); mu is normalised the same way, logvar is the raw one
    (as Lance's Wan2_2_VAE.encode returns them).
  OUT/../../io/data/torch_save_small.pth  a few tensors of every storage type the reader supports
                               (f32, f16 view with an offset, bf16, a transposed f64 view, a Parameter,
                               nested dicts); their values are arange-based so the test computes them.

Weights are random normal (std 1/sqrt(fan_in), RMS gains 1 + 0.1 N) rounded to f16 so the F16 files are
exact; the decoder's output filter is scaled so pixels mostly stay inside [-1, 1] (the clamp would
otherwise hide errors).

With --check-original PATH (Wan's or Lance's vae2_2.py; needs einops) the script also builds the
original WanVAE_, loads the .pth state dict into it strictly and checks it decodes and encodes like
diffusers: this validates the diffusers -> original name mapping that src/vae/weights.cpp uses.

Usage: python tools/gen_wan_vae_golden.py --out tests/vae/data [--check-original vae2_2.py]
Needs torch, diffusers (tested with torch 2.9.1, diffusers 0.42.1), safetensors.
"""
import argparse
import collections
import importlib.util
import json
import math
import os
import re
import sys

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file

# Wan2.2's 48 latent means / stds (Wan2_2_VAE in Wan's vae2_2.py; diffusers' Wan2.2 config has the same).
MEAN = [-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
        0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
        -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667]
STD = [0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
       0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
       0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
       0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744]

TINY = dict(base_dim=3, decoder_base_dim=4, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
            temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
            patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=MEAN, latents_std=STD)


def to_original_name(name, num_res_blocks=2):
    """diffusers AutoencoderKLWan (Wan2.2, is_residual) parameter name -> Wan's WanVAE_ name."""
    fixed = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
    head, _, rest = name.partition(".")
    if head in fixed:
        return fixed[head] + "." + rest
    resnet = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
              "conv2": "residual.6", "conv_shortcut": "shortcut"}

    def res(tail):
        for k, v in resnet.items():
            if tail == k or tail.startswith(k + "."):
                return v + tail[len(k):]
        raise ValueError(name)

    n = name
    m = re.match(r"(encoder|decoder)\.(conv_in|norm_out\.gamma|conv_out)(\..*)?$", n)
    if m:
        part = {"conv_in": "conv1", "norm_out.gamma": "head.0.gamma", "conv_out": "head.2"}[m.group(2)]
        return f"{m.group(1)}.{part}{m.group(3) or ''}"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)$", n)
    if m:
        return f"{m.group(1)}.middle.{2 * int(m.group(2))}.{res(m.group(3))}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)$", n)
    if m:
        return f"{m.group(1)}.middle.1.{m.group(2)}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", n)
    if m:
        return f"encoder.downsamples.{m.group(1)}.downsamples.{m.group(2)}.{res(m.group(3))}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsampler\.(.*)$", n)
    if m:
        return f"encoder.downsamples.{m.group(1)}.downsamples.{num_res_blocks}.{m.group(2)}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", n)
    if m:
        return f"decoder.upsamples.{m.group(1)}.upsamples.{m.group(2)}.{res(m.group(3))}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsampler\.(.*)$", n)
    if m:
        return f"decoder.upsamples.{m.group(1)}.upsamples.{num_res_blocks + 1}.{m.group(2)}"
    raise ValueError("unmapped parameter " + name)


def randomize(vae, gen):
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=gen)
            else:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
            if name == "decoder.conv_out.weight":
                v = v * 0.25
            p.copy_(v.half().float())


def channels_last(x):  # [1, C, T, H, W] -> [T, H, W, C]
    return x[0].permute(1, 2, 3, 0).contiguous()


def small_pth(path):
    base16 = torch.arange(10, dtype=torch.float32).half()
    model = collections.OrderedDict()
    model["a.weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3) - 2.5
    model["b.gamma"] = torch.full((4, 1, 1, 1), 0.75)
    model["c"] = base16[2:6]                                           # f16 view, storage offset 2
    model["d"] = (torch.arange(3, dtype=torch.float32) * 0.5 - 1).bfloat16()
    model["e"] = (torch.arange(6, dtype=torch.float64).reshape(2, 3) / 4).t()  # transposed f64 view
    model["p"] = torch.nn.Parameter(torch.arange(5, dtype=torch.float32) * -1.0)
    torch.save({"model": model, "step": 7, "extra": {"scale": torch.tensor([2.0, 3.0])}}, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-original", help="Wan's vae2_2.py: cross-check the original-name mapping")
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    vae = AutoencoderKLWan(**TINY).eval()
    randomize(vae, gen)
    mean = torch.tensor(MEAN).view(1, 48, 1, 1, 1)
    std = torch.tensor(STD).view(1, 48, 1, 1, 1)

    os.makedirs(os.path.join(args.out, "wan_vae_tiny"), exist_ok=True)
    sd = {k: v.half().contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, os.path.join(args.out, "wan_vae_tiny", "diffusion_pytorch_model.safetensors"))
    cfg = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    cfg["_class_name"] = "AutoencoderKLWan"
    with open(os.path.join(args.out, "wan_vae_tiny", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    original = collections.OrderedDict((to_original_name(k), v) for k, v in sd.items())
    torch.save(original, os.path.join(args.out, "wan_vae_tiny.pth"))

    io = {}
    with torch.no_grad():
        # Decode: normalised latents (Lance) -> raw = z * std + mean -> pixels.
        for tag, (t, h, w) in {"image": (1, 2, 3), "video": (3, 2, 2)}.items():
            z = torch.randn(1, 48, t, h, w, generator=gen)
            out = vae.decode(z * std + mean).sample  # clamped to [-1, 1]
            io[f"{tag}_latents"] = channels_last(z)
            io[f"{tag}_decoded"] = channels_last(out)
            frac = (out.abs() >= 1).float().mean().item()
            print(f"{tag}: decoded {tuple(out.shape)}, std {out.std():.3f}, clamped fraction {frac:.3f}")
        # Encode: pixels in [-1, 1] -> mu (normalised), logvar (raw).
        for tag, (T, H, W) in {"image": (1, 32, 48), "video": (9, 32, 32)}.items():
            x = torch.rand(1, 3, T, H, W, generator=gen) * 2 - 1
            post = vae.encode(x).latent_dist
            io[f"{tag}_pixels"] = channels_last(x)
            io[f"{tag}_mu"] = channels_last((post.mean - mean) / std)
            io[f"{tag}_logvar"] = channels_last(post.logvar)
            assert post.logvar.min() > -30 and post.logvar.max() < 20  # diffusers' clamp did not act
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(args.out, "wan_vae_tiny_io.safetensors"))

    io_dir = os.path.join(args.out, "..", "..", "io", "data")
    os.makedirs(io_dir, exist_ok=True)
    small_pth(os.path.join(io_dir, "torch_save_small.pth"))

    if args.check_original:
        spec = importlib.util.spec_from_file_location("vae2_2", args.check_original)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        ref = mod.WanVAE_(dim=TINY["base_dim"], dec_dim=TINY["decoder_base_dim"], z_dim=48, dim_mult=TINY["dim_mult"],
                          num_res_blocks=2, attn_scales=[], temperal_downsample=TINY["temperal_downsample"]).eval()
        loaded = torch.load(os.path.join(args.out, "wan_vae_tiny.pth"), weights_only=True)
        ref.load_state_dict({k: v.float() for k, v in loaded.items()}, strict=True)
        scale = [mean.view(48), 1.0 / std.view(48)]
        with torch.no_grad():
            z = io["video_latents"].permute(3, 0, 1, 2).unsqueeze(0)
            dec = ref.decode(z, scale).clamp(-1, 1)
            d1 = (channels_last(dec) - io["video_decoded"]).abs().max().item()
            x = io["video_pixels"].permute(3, 0, 1, 2).unsqueeze(0)
            enc = ref.encode(x, scale)  # Lance's copy returns (mu, log_var), Wan's mu alone
            mu, logvar = enc if isinstance(enc, tuple) else (enc, io["video_logvar"].permute(3, 0, 1, 2).unsqueeze(0))
            d2 = (channels_last(mu) - io["video_mu"]).abs().max().item()
            d3 = (channels_last(logvar) - io["video_logvar"]).abs().max().item()
        print(f"original WanVAE_ vs diffusers: decode {d1:.2e}, mu {d2:.2e}, logvar {d3:.2e} (max abs)")
        if max(d1, d2, d3) > 1e-4:
            sys.exit("the original model disagrees: name mapping or configuration is wrong")

    total = 0
    for root, _, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
