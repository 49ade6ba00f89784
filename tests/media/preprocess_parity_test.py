"""Our ViT frame transform against a PIL / numpy implementation of Lance's rule, on real photographs.

Lance's reference (data/transforms.py VideoTransform with mode "bucket", as ValidationDataset builds it
for the ViT): NaResize -> BucketResize(max_area=R^2, stride 16, its interpolation = NaResize's default
BICUBIC) = torchvision RandomResizedCrop(bucket, scale=(1, 1), ratio=(r, r)) on the PIL image (the whole
image when its ratio is r, else the centred crop of ratio r) + PIL resize; to_tensor; DivisibleCrop(28)
(torchvision center_crop); Normalize(CLIP mean, std). The image loading rule is Lance's
get_video_tensor_online (P -> RGBA, RGBA composited on white, else convert("RGB")).

The photographs are data/images (scikit-image samples); variants made here from them cover PNG, WebP,
grey, RGBA and palette images and every bucket ratio. Each is compared at R = 224 (downscaling), 616
and 672 (mostly upscaling): the 8-bit resized image must be identical and the normalised tensor within
1e-3 (it is expected to agree to float rounding).
"""
import math
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from PIL import Image
    from safetensors.numpy import load_file
except ImportError as e:  # the test venv lacks a package: skip
    print(f"skipping: {e}")
    sys.exit(77)

RATIOS = ["21:9", "16:9", "4:3", "1:1", "3:4", "9:16"]
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def buckets(resolution, stride=16):
    """BucketResize.init_buckets."""
    max_area = resolution ** 2
    out = []
    for name in RATIOS:
        w, h = (int(v) for v in name.split(":"))
        ar = w / h
        bw1 = round(math.sqrt(max_area * ar) / stride) * stride
        bh1 = round(bw1 / ar / stride) * stride
        bh2 = round(math.sqrt(max_area / ar) / stride) * stride
        bw2 = round(bh2 * ar / stride) * stride
        r1, r2 = bw1 / bh1, bw2 / bh2
        if abs(r1 - ar) < abs(r2 - ar):
            bw, bh = bw1, bh1
        elif abs(r1 - ar) > abs(r2 - ar):
            bw, bh = bw2, bh2
        elif abs(bw1 * bh1 - max_area) <= abs(bw2 * bh2 - max_area):
            bw, bh = bw1, bh1
        else:
            bw, bh = bw2, bh2
        out.append((bh, bw, bw / bh))
    return out


def crop_box(width, height, ratio):
    """RandomResizedCrop.get_params with scale=(1, 1), ratio=(r, r): log and exp of the ratio in float32."""
    area = height * width
    ar = float(np.exp(np.log(np.float32(ratio))))
    w = int(round(math.sqrt(area * ar)))
    h = int(round(math.sqrt(area / ar)))
    if 0 < w <= width and 0 < h <= height:
        return (height - h) // 2, (width - w) // 2, h, w  # (torchvision draws this offset; it is 0 or 1 px)
    in_ratio = width / height
    if in_ratio < ratio:
        w, h = width, int(round(width / ratio))
    elif in_ratio > ratio:
        h, w = height, int(round(height * ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def load(path):
    im = Image.open(path)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.split()[3])
        return bg
    return im.convert("RGB")


def lance_transform(path, resolution):
    im = load(path)
    bs = buckets(resolution)
    r = im.width / im.height
    bh, bw, br = bs[int(np.argmin([abs(r - b[2]) for b in bs]))]
    top, left, h, w = crop_box(im.width, im.height, br)
    resized = im.crop((left, top, left + w, top + h)).resize((bw, bh), Image.BICUBIC)
    x = np.asarray(resized, dtype=np.uint8)
    t = x.astype(np.float32) / np.float32(255)
    ch, cw = bh - bh % 28, bw - bw % 28
    ct, cl = int(round((bh - ch) / 2.0)), int(round((bw - cw) / 2.0))
    t = t[ct:ct + ch, cl:cl + cw]
    t = (t - MEAN) / STD
    return x, np.ascontiguousarray(t.transpose(2, 0, 1))


def variants(images, work):
    """(label, path): the committed photos plus derived files covering formats, modes and ratios."""
    out = [(os.path.basename(p), p) for p in images]
    chelsea = Image.open(os.path.join(os.path.dirname(images[0]), "chelsea.jpg")).convert("RGB")
    astro = Image.open(os.path.join(os.path.dirname(images[0]), "astronaut.jpg")).convert("RGB")

    def save(label, im, **kw):
        p = os.path.join(work, label)
        im.save(p, **kw)
        out.append((label, p))

    save("chelsea.png", chelsea)
    save("chelsea_lossless.webp", chelsea, lossless=True)
    save("chelsea_grey.jpg", chelsea.convert("L"), quality=90)
    rgba = astro.copy()
    alpha = np.tile(np.linspace(0, 255, astro.width).astype(np.uint8), (astro.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    save("astronaut_rgba.png", rgba)
    pal = astro.quantize(colors=64)
    pal.info["transparency"] = 3
    save("astronaut_palette.png", pal, transparency=3)
    # Every bucket ratio: crops of a photo at 21:9, 16:9, 4:3, 3:4, 9:16 and an odd size.
    for name, (w, h) in {"21x9": (384, 165), "16x9": (384, 216), "4x3": (360, 270), "3x4": (240, 320),
                         "9x16": (198, 352), "odd": (383, 211)}.items():
        im = chelsea if w >= h else astro
        save(f"crop_{name}.jpg", im.crop((0, 0, min(w, im.width), min(h, im.height))), quality=92)
    return out


def main():
    src = os.environ["LQ_SOURCE_DIR"]
    dump = os.path.join(os.environ["LQ_BINARY_DIR"], "media_dump")
    if not os.path.exists(dump):
        print(f"FAIL: {dump} not built")
        return 1
    img_dir = os.path.join(src, "data", "images")
    images = sorted(os.path.join(img_dir, f) for f in os.listdir(img_dir))
    scratch = os.path.join(os.environ["LQ_BINARY_DIR"], "test-scratch")
    os.makedirs(scratch, exist_ok=True)
    work = tempfile.mkdtemp(prefix="preprocess_parity_", dir=scratch)
    failures, checked, worst = 0, 0, 0.0
    for label, path in variants(images, work):
        for res in (224, 616, 672):
            out = os.path.join(work, f"{label}.{res}.safetensors")
            r = subprocess.run([dump, path, str(res), out], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL {label} R={res}: media_dump: {r.stderr.strip()}")
                failures += 1
                continue
            ours = load_file(out)
            ref_u8, ref_t = lance_transform(path, res)
            checked += 1
            if ours["resized"].shape != ref_u8.shape or ours["normalized"].shape != ref_t.shape:
                print(f"FAIL {label} R={res}: shapes {ours['resized'].shape} {ours['normalized'].shape} vs "
                      f"{ref_u8.shape} {ref_t.shape}")
                failures += 1
                continue
            diff_px = int(np.count_nonzero(ours["resized"] != ref_u8))
            err = float(np.max(np.abs(ours["normalized"] - ref_t)))
            worst = max(worst, err)
            status = "ok" if diff_px == 0 and err <= 1e-3 else "FAIL"
            failures += status == "FAIL"
            print(f"{status} {label:26s} R={res}: {ref_t.shape[2]}x{ref_t.shape[1]}, 8-bit pixels differing "
                  f"{diff_px}, max |normalised diff| {err:.2e}")
    print(f"{checked} transforms compared, worst normalised difference {worst:.2e}, {failures} failures")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
