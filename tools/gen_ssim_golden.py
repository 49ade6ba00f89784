#!/usr/bin/env python3
"""Golden PSNR / SSIM values for src/eval/pictures.cpp, computed by scikit-image.

Image pairs are defined by integer formulas that tests/eval/pictures_test.cpp evaluates too:
  a[y, x, c] = (7x + 13y + 29c + (x y mod 17)) mod 256
  b[y, x, c] = clip(a[y, x, c] + s (((3x + 5y + 7c + k) mod 21) - 10), 0, 255)   (k, s: the case's)
SSIM: structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False) (Wang et al.'s settings); PSNR: peak_signal_noise_ratio(a, b, data_range=255).
Usage: python tools/gen_ssim_golden.py > tests/eval/data/ssim_golden.json   (scikit-image 0.25)
"""
import json

import numpy as np
import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def pair(w, h, k, s):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    a = (7 * x + 13 * y + 29 * c + (x * y) % 17) % 256
    b = np.clip(a + s * ((3 * x + 5 * y + 7 * c + k) % 21 - 10), 0, 255)
    return a.astype(np.uint8), b.astype(np.uint8)


cases = []
for w, h, k, s in [(32, 24, 0, 1), (16, 16, 5, 1), (11, 11, 3, 6), (40, 13, 11, 12)]:
    a, b = pair(w, h, k, s)
    ssim = structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    psnr = peak_signal_noise_ratio(a, b, data_range=255)
    cases.append({"width": w, "height": h, "k": k, "s": s, "ssim": float(ssim), "psnr_db": float(psnr)})
print(json.dumps({"generator": "tools/gen_ssim_golden.py", "scikit_image": skimage.__version__, "cases": cases}, indent=1))
