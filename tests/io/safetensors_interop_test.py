"""Interop with the reference safetensors implementation (PyPI `safetensors`, numpy API).

1. The reference writes python.safetensors; our reader must decode it (checked in C++).
2. Our writer writes ours.safetensors; the reference must load it with the expected values.
3. The reference gives the same verdict as we do on every fuzzing seed: valid_* accepted, bad_*
   rejected (our verdicts on the same files are asserted by SafetensorsFuzzCorpus.ReplaysEverySeed).
The C++ half is the gtest SafetensorsInterop.* in test_io, run here with LQ_INTEROP_DIR set.
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def reference_agrees_on_corpus():
    seeds = sorted(glob.glob(os.path.join(os.environ["LQ_SOURCE_DIR"], "tools", "fuzz", "corpus", "*")))
    ok = len(seeds) >= 20
    for path in seeds:
        name = os.path.basename(path)
        try:
            with safe_open(path, framework="np") as f:
                list(f.keys())
            accepted, why = True, ""
        except Exception as e:  # the reference raises SafetensorError (and others) on bad files
            accepted, why = False, str(e)
        if accepted != name.startswith("valid_"):
            print(f"reference disagrees on {name}: accepted={accepted} {why}")
            ok = False
    return ok


def main():
    binary = os.path.join(os.environ["LQ_BINARY_DIR"], "test_io")
    scratch = os.path.join(os.environ["LQ_BINARY_DIR"], "test-scratch")
    os.makedirs(scratch, exist_ok=True)
    work = tempfile.mkdtemp(prefix="st_interop_", dir=scratch)

    tensors = {
        "f32": (np.arange(12, dtype=np.float32) * 0.25 - 1.0).reshape(3, 4),
        "f16": np.array([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=np.float16),
        "i32": np.array([[-5, 0], [7, 2147483647]], dtype=np.int32),
        "u8": np.arange(0, 240, 40, dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    save_file(tensors, os.path.join(work, "python.safetensors"), metadata={"source": "python"})

    env = dict(os.environ, LQ_INTEROP_DIR=work)
    run = subprocess.run([binary, "--gtest_filter=SafetensorsInterop.*"],
                         env=env, capture_output=True, text=True)
    print(run.stdout[-3000:], run.stderr[-3000:])
    if run.returncode != 0 or "[  PASSED  ] 1 test" not in run.stdout:
        print("C++ half failed")
        return 1

    ours = os.path.join(work, "ours.safetensors")
    got = load_file(ours)
    want = {
        "a": np.array([[0.0, 1.5, 3.0], [4.5, 6.0, 7.5]], dtype=np.float32),
        "z": np.zeros((0,), dtype=np.float32),
        "c": np.array([1.0, -2.0, 0.5], dtype=np.float16),
        "d": np.array([-123456, 654321], dtype=np.int32),
        "e": np.array([9, 8, 7, 255], dtype=np.uint8),
    }
    ok = sorted(got) == sorted(want)
    for name, w in want.items():
        g = got.get(name)
        if g is None or g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
            print(f"mismatch in {name}: got {g!r}, want {w!r}")
            ok = False
    with safe_open(ours, framework="np") as f:
        if f.metadata() != {"writer": "lance-quant"}:
            print(f"metadata mismatch: {f.metadata()!r}")
            ok = False
    ok = reference_agrees_on_corpus() and ok
    print("interop ok" if ok else "interop FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
