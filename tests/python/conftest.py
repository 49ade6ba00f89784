"""Shared fixtures of the lance_quant package tests (run by tests/python/run.py from ctest)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

SOURCE_DIR = os.environ.get("LQ_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SHARED_DIR = os.environ.get("LQ_SHARED_DIR", os.path.join(SOURCE_DIR, "..", "shared"))
LANCE_MINI = os.path.join(SHARED_DIR, "fixtures", "lance-mini")
EXE = os.environ.get("LQ_EXE", os.path.join(SOURCE_DIR, "build", "lance-quant"))


@pytest.fixture(scope="session")
def mini():
    if not os.path.exists(os.path.join(LANCE_MINI, "model.safetensors")):
        pytest.skip(f"lance-mini fixture not found at {LANCE_MINI} (set LQ_SHARED_DIR)")
    return LANCE_MINI


@pytest.fixture(scope="session")
def exe():
    if not os.access(EXE, os.X_OK):
        pytest.skip(f"lance-quant executable not found at {EXE} (set LQ_EXE)")
    return EXE


def run_cli(*args, check=True):
    """Runs the CLI with 2 threads, as the Python side of each comparison does."""
    p = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"lance-quant {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


def read_safetensors(path):
    """Minimal safetensors reader (numpy only): {name: array}."""
    import json
    import struct
    dtypes = {"F32": np.float32, "I32": np.int32, "BF16": np.uint16, "F16": np.float16, "U8": np.uint8,
              "I64": np.int64}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def bit_equal(a, b):
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
