#!/usr/bin/env python3
"""Builds data/images and data/videos from scikit-image's sample photographs (public domain or CC0, see
data/README.md): small JPEG / WebP / PNG copies, and short H.264 clips that pan or zoom across a photo.

Deterministic for given package versions. Needs scikit-image, Pillow and PyAV (/work/venv-dev has them):
    /work/venv-dev/bin/python tools/make_media_data.py [--out data]
"""
import argparse
import os

import av
import numpy as np
import skimage.data as sk
from PIL import Image

# name in data/images, scikit-image function, max side, format (+ options)
IMAGES = [
    ("astronaut.jpg", "astronaut", 384, dict(format="JPEG", quality=88)),
    ("coffee.webp", "coffee", 480, dict(format="WEBP", quality=82, method=6)),
    ("rocket.jpg", "rocket", 480, dict(format="JPEG", quality=88)),
    ("camera.png", "camera", 256, dict(format="PNG", optimize=True)),
    ("ihc.jpg", "immunohistochemistry", 320, dict(format="JPEG", quality=88)),
    ("chelsea.jpg", "chelsea", 451, dict(format="JPEG", quality=88)),
    ("hubble.jpg", "hubble_deep_field", 400, dict(format="JPEG", quality=88)),
    ("retina.jpg", "retina", 320, dict(format="JPEG", quality=88)),
]

# name, photo, motion, seconds; 320x180 at 24 fps
VIDEOS = [
    ("coffee_pan.mp4", "coffee", "pan", 1.5),
    ("rocket_zoom.mp4", "rocket", "zoom", 1.5),
    ("chelsea_pan.mp4", "chelsea", "pan", 1.5),
]


def photo(name):
    a = getattr(sk, name)()
    return Image.fromarray(a)


def write_images(out):
    os.makedirs(out, exist_ok=True)
    for fname, src, side, opts in IMAGES:
        im = photo(src)
        im.thumbnail((side, side), Image.LANCZOS)
        im.save(os.path.join(out, fname), **opts)
        print(fname, im.size, im.mode, os.path.getsize(os.path.join(out, fname)), "bytes")


def frames(src, motion, n, w=320, h=180):
    im = photo(src).convert("RGB")
    W, H = im.size
    for k in range(n):
        f = k / max(1, n - 1)
        if motion == "pan":  # a 16:9 window sliding left to right over the photo
            ch = H
            cw = min(W, int(ch * 16 / 9))
            if cw == W:
                ch = int(cw * 9 / 16)
            x = int((W - cw) * f)
            box = (x, (H - ch) // 2, x + cw, (H - ch) // 2 + ch)
        else:  # zoom towards the centre, 1x -> 1.6x
            z = 1.0 + 0.6 * f
            cw, ch = W / z, W / z * 9 / 16
            if ch > H / z:
                ch = H / z
                cw = ch * 16 / 9
            box = (int((W - cw) / 2), int((H - ch) / 2), int((W + cw) / 2), int((H + ch) / 2))
        yield np.asarray(im.crop(box).resize((w, h), Image.BICUBIC))


def write_videos(out, fps=24):
    os.makedirs(out, exist_ok=True)
    for fname, src, motion, seconds in VIDEOS:
        path = os.path.join(out, fname)
        with av.open(path, "w", format="mp4") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
            s.options = {"crf": "26", "preset": "medium", "threads": "1"}
            for a in frames(src, motion, int(round(seconds * fps))):
                for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        print(fname, os.path.getsize(path), "bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data")
    a = ap.parse_args()
    write_images(os.path.join(a.out, "images"))
    write_videos(os.path.join(a.out, "videos"))


if __name__ == "__main__":
    main()
