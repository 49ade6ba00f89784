#!/usr/bin/env python3
"""Deterministic generator of toy-grammar text-to-image prompts for lance-mini.

Caption grammar (see shared/fixtures/lance-mini/README.md, "Training data sources"):

    a {small|large} {colour} {shape} {position}[ and a {small|large} {colour} {shape} {position}]
      on a {background} background

Shape colours never equal the background colour, and two shapes never share a position.

Writes data/calib/t2i_toy_prompts.txt (64 prompts) and data/eval/t2i_toy_prompts.txt (32 prompts).
The two sets are disjoint from each other and from every caption in the lance-mini fixture files
(calib_prompts.txt, samples/captions.txt) and the golden captions; the fixture files are read
when present and skipped otherwise. Standard library only; fixed seed, so the output is
byte-for-byte reproducible.

Usage: python3 tools/gen_toy_prompts.py [--fixtures DIR] [--out-dir DATA_DIR]
"""

import argparse
import os
import random
import sys

SEED = 20260127
N_CALIB = 64
N_EVAL = 32

SIZES = ["small", "large"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "cross"]
BACKGROUNDS = ["white", "black", "gray", "blue"]
POSITIONS = [
    "in the top left", "at the top", "in the top right",
    "on the left", "in the center", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right",
]

GOLDEN_CAPTIONS = [
    "a large red circle in the top left on a white background",
    "a small yellow square at the top and a large blue triangle in the bottom right on a black background",
]


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_fixtures():
    root = repo_root()
    for cand in (os.path.join(root, "shared", "fixtures", "lance-mini"),
                 "/work/shared/fixtures/lance-mini"):
        if os.path.isdir(cand):
            return cand
    return os.path.join(root, "shared", "fixtures", "lance-mini")


def read_captions(path):
    """Caption lines of a file; 'name<TAB>caption' lines keep only the caption."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if "\t" in line:
                    line = line.rsplit("\t", 1)[1]
                line = " ".join(line.split())
                if line:
                    out.append(line)
    except OSError:
        pass
    return out


def shape_phrase(rng, bg, taken):
    size = rng.choice(SIZES)
    colour = rng.choice([c for c in COLOURS if c != bg])
    shape = rng.choice(SHAPES)
    pos = rng.choice([p for p in POSITIONS if p not in taken])
    return "a %s %s %s %s" % (size, colour, shape, pos), pos


def make_caption(rng):
    bg = rng.choice(BACKGROUNDS)
    first, pos = shape_phrase(rng, bg, ())
    parts = [first]
    if rng.random() < 0.5:
        second, _ = shape_phrase(rng, bg, (pos,))
        parts.append(second)
    return " and ".join(parts) + " on a %s background" % bg


def generate(excluded, n_calib=N_CALIB, n_eval=N_EVAL, seed=SEED):
    rng = random.Random(seed)
    seen = set(excluded)
    calib, evals = [], []
    # Alternate between the two sets so each gets a similar mix; balance one/two shape prompts.
    while len(calib) < n_calib or len(evals) < n_eval:
        cap = make_caption(rng)
        if cap in seen:
            continue
        seen.add(cap)
        if len(calib) < n_calib and (len(evals) >= n_eval or len(calib) <= 2 * len(evals)):
            calib.append(cap)
        else:
            evals.append(cap)
    return calib, evals


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=default_fixtures(),
                    help="lance-mini fixture directory (captions there are excluded)")
    ap.add_argument("--out-dir", default=os.path.join(repo_root(), "data"),
                    help="data directory to write calib/ and eval/ into")
    args = ap.parse_args(argv)

    excluded = set(GOLDEN_CAPTIONS)
    for rel in ("calib_prompts.txt", os.path.join("samples", "captions.txt")):
        excluded.update(read_captions(os.path.join(args.fixtures, rel)))

    calib, evals = generate(excluded)
    assert not (set(calib) & set(evals)) and not ((set(calib) | set(evals)) & excluded)

    for sub, lines in (("calib", calib), ("eval", evals)):
        d = os.path.join(args.out_dir, sub)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "t2i_toy_prompts.txt")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        print("wrote %s (%d prompts)" % (path, len(lines)))
    print("excluded %d fixture/golden captions" % len(excluded), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
