#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_safetensors into tools/fuzz/corpus/ (committed; rerun to refresh).

Each seed is a whole small .safetensors image: valid files and one per class of malformation the
parser must reject. Standard library only.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def image(header, data=b"", pad=True):
    """8-byte little-endian length + header text (+ spaces to 8-byte alignment) + data bytes."""
    h = header if isinstance(header, bytes) else header.encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def js(obj):
    return json.dumps(obj, separators=(",", ":"))


f32 = struct.pack("<4f", 1.0, -2.5, 3.25, 0.0)
seeds = {
    "valid_empty": image("{}"),
    "valid_metadata_only": image(js({"__metadata__": {"format": "pt"}})),
    "valid_f32": image(js({"w": entry("F32", [2, 2], 0, 16)}), f32),
    "valid_mixed": image(js({"__metadata__": {"k": "v"}, "a": entry("BF16", [2], 0, 4),
                             "b": entry("F16", [1, 2], 4, 8), "c": entry("U8", [3], 8, 11),
                             "d": entry("I32", [0, 5], 11, 11)}), bytes(range(11))),
    "valid_scalar_unpadded": image(js({"s": entry("F64", [], 0, 8)}), b"\0" * 8, pad=False),
    "bad_short": b"\x05\0\0",
    "bad_len_huge": struct.pack("<Q", 2**63) + b"{}",
    "bad_len_past_end": struct.pack("<Q", 64) + b"{}      ",
    "bad_not_brace": image(js([1, 2])),
    "bad_json": image('{"w":{"dtype":"F32",'),
    "bad_duplicate_tensor": image('{"w":' + js(entry("U8", [1], 0, 1)) + ',"w":' + js(entry("U8", [1], 1, 2)) + "}", b"ab"),
    "bad_duplicate_field": image('{"w":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "bad_entry_not_object": image(js({"w": [1, 2]})),
    "bad_unknown_dtype": image(js({"w": entry("F17", [1], 0, 1)}), b"a"),
    "bad_negative_dim": image(js({"w": entry("U8", [-1], 0, 1)}), b"a"),
    "bad_overflow_dims": image(js({"w": entry("F32", [2**40, 2**40, 0], 0, 0)})),
    "bad_size_mismatch": image(js({"w": entry("F32", [2], 0, 4)}), b"abcd"),
    "bad_offsets_reversed": image(js({"w": entry("U8", [0], 4, 0)}), b"abcd"),
    "bad_truncated": image(js({"w": entry("F32", [4], 0, 16)}), b"abcd"),
    "bad_overlap": image(js({"a": entry("U8", [4], 0, 4), "b": entry("U8", [2], 2, 4)}), b"abcd"),
    "bad_gap": image(js({"a": entry("U8", [1], 0, 1), "b": entry("U8", [2], 2, 4)}), b"abcd"),
    "bad_trailing": image(js({"a": entry("U8", [1], 0, 1)}), b"abcd"),
    "bad_metadata_value": image(js({"__metadata__": {"k": 3}})),
    "bad_deep": image("{\"w\":{\"x\":" + "[" * 40 + "]" * 40 + "}}"),
    "bad_utf8_name": image(b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
}

os.makedirs(OUT, exist_ok=True)
for name, blob in seeds.items():
    with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
        f.write(blob)
print(f"wrote {len(seeds)} seeds to {OUT}")
