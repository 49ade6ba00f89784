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


def write_safetensors(path, tensors):
    """Minimal safetensors writer (numpy only): {name: (dtype string, array)} in the given order."""
    import json
    import struct
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def safetensors_dtypes(path):
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return {k: v["dtype"] for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}


@pytest.fixture(scope="session")
def media(mini, exe, tmp_path_factory):
    """Random-weight fixtures for the picture / video / understanding tasks, as the C++ tests build them:
    a small ViT (`synth --vit small --vit-out-hidden 256`), a tiny Wan2.2 VAE (`synth-vae --size tiny`), and
    `model`: lance-mini with that ViT embedded as vit_model.* (Lance_3B_Video's layout) and 3 latent frames
    allowed (t2v). Random weights prove the plumbing (shapes, frame counts, equality with the CLI), not quality."""
    import json
    d = tmp_path_factory.mktemp("media")
    vit, vae, model = str(d / "vit"), str(d / "vae"), d / "model"
    run_cli("synth", "--vit", "small", "--vit-out-hidden", "256", "--seed", "3", "--out", vit)
    run_cli("synth-vae", "--size", "tiny", "--seed", "4", "--out", vae)
    model.mkdir()
    for name in os.listdir(mini):
        src = os.path.join(mini, name)
        if os.path.isfile(src) and name not in ("model.safetensors", "llm_config.json", "lance_config.json"):
            shutil.copy(src, model / name)
    a_path, v_path = os.path.join(mini, "model.safetensors"), os.path.join(vit, "vit.safetensors")
    a, v = read_safetensors(a_path), read_safetensors(v_path)
    ad, vd = safetensors_dtypes(a_path), safetensors_dtypes(v_path)
    tensors = {n: (ad[n], a[n]) for n in a}
    tensors.update({"vit_model." + n: (vd[n], v[n]) for n in v})
    write_safetensors(str(model / "model.safetensors"), tensors)
    with open(os.path.join(mini, "llm_config.json")) as f:
        llm = json.load(f)
    with open(os.path.join(vit, "config.json")) as f:
        llm["vision_config"] = json.load(f)
    with open(model / "llm_config.json", "w") as f:
        json.dump(llm, f, indent=2)
    with open(os.path.join(mini, "lance_config.json")) as f:
        lc = json.load(f)
    lc["max_num_latent_frames"] = 3
    with open(model / "lance_config.json", "w") as f:
        json.dump(lc, f, indent=1)
    return {"dir": str(d), "vit": vit, "vae": vae, "model": str(model)}


def data_file(rel):
    return os.path.join(SOURCE_DIR, "data", rel)


def cli_json(*args):
    """`lance-quant run ... --json`: the last JSON line of stdout."""
    import json
    lines = [ln for ln in run_cli("run", *args, "--json").stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])
