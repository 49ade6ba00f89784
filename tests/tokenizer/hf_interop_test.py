#!/usr/bin/env python3
"""Interop: `lance-quant tokenize` against Hugging Face `tokenizers` on the real Qwen2.5 tokenizer.

Encodes every line of tests/tokenizer/data/varied_lines.txt (written by tools/gen_tokenizer_corpus.py)
with both and requires identical ids; checks `--decode` against HF decode (special tokens kept) on
all lines (and on token pieces that are not UTF-8 alone); checks that invalid UTF-8 input encodes
like HF does on the Python-repaired string (bytes.decode("utf-8", "replace")); and checks added
tokens with lstrip/rstrip/single_word/normalized on a copy of the tokenizer.json that adds some.
Prints the number of lines compared and the first mismatches; exit 1 on any mismatch.
Environment: LQ_EXE (the built lance-quant), LQ_SHARED_DIR (skips with 77 when the tokenizer is absent),
LQ_SOURCE_DIR (defaults to this checkout).
"""
import os
import subprocess
import sys
from pathlib import Path

SKIP = 77


def run_cli(exe: str, tokenizer_dir: Path, stdin: bytes, *flags: str) -> list[bytes]:
    result = subprocess.run([exe, "tokenize", str(tokenizer_dir), *flags], input=stdin,
                            capture_output=True, timeout=300)
    if result.returncode != 0:
        sys.exit(f"lance-quant tokenize {' '.join(flags)} failed ({result.returncode}): "
                 f"{result.stderr.decode(errors='replace')}")
    return result.stdout.split(b"\n")[:-1]


def parse_ids(line: bytes) -> list[int]:
    return [int(x) for x in line.split()]


def report_mismatches(what: str, mismatches: list[str], compared: int) -> bool:
    print(f"{what}: {compared} lines compared, {len(mismatches)} mismatches")
    for m in mismatches[:10]:
        print("  " + m)
    return not mismatches


def main() -> int:
    shared = Path(os.environ.get("LQ_SHARED_DIR", ""))
    tokenizer_dir = shared / "data" / "qwen2.5-tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        print(f"skip: {tokenizer_dir}/tokenizer.json not found (set LQ_SHARED_DIR)")
        return SKIP
    exe = os.environ.get("LQ_EXE") or sys.exit("LQ_EXE is not set")
    source = Path(os.environ.get("LQ_SOURCE_DIR", Path(__file__).resolve().parents[2]))
    from tokenizers import Tokenizer  # noqa: E402 (only needed when the test runs)

    hf = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    raw = (source / "tests/tokenizer/data/varied_lines.txt").read_bytes()
    lines = raw.split(b"\n")[:-1]  # '\n' only: '\r' stays inside the text, as in the CLI
    texts = [line.decode("utf-8") for line in lines]

    # Invalid UTF-8 input: ours repairs it the way Python's errors="replace" does before HF sees it.
    invalid = [b"abc\xffdef", b"caf\xc3", b"\xe2\x82 euro", b"\xf0\x9f\xa6 llama", b"\xed\xa0\x80 surrogate",
               b"\xc0\xaf overlong", b"\xf4\x90\x80\x80 too big", b"ok \x80\x80\x80 end"]
    # One CLI run encodes the corpus and then the invalid lines (each run loads the tokenizer).
    outputs = run_cli(exe, tokenizer_dir, raw + b"".join(b + b"\n" for b in invalid))
    if len(outputs) != len(texts) + len(invalid):
        sys.exit(f"lance-quant printed {len(outputs)} lines for {len(texts) + len(invalid)} input lines")
    ours = [parse_ids(out) for out in outputs[:len(texts)]]
    expected = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    mismatches = [f"line {i + 1} {texts[i]!r}:\n    ours {ours[i]}\n    hf   {expected[i]}"
                  for i in range(len(texts)) if ours[i] != expected[i]]
    ok = report_mismatches("encode", mismatches, len(texts))
    print(f"  ({sum(len(ids) for ids in expected)} tokens)")

    ours_invalid = [parse_ids(out) for out in outputs[len(texts):]]
    hf_invalid = [hf.encode(b.decode("utf-8", "replace"), add_special_tokens=False).ids for b in invalid]
    invalid_mismatches = [f"{invalid[i]!r}: ours {ours_invalid[i]} hf {hf_invalid[i]}"
                          for i in range(len(invalid)) if ours_invalid[i] != hf_invalid[i]]
    ok = report_mismatches("invalid UTF-8", invalid_mismatches, len(invalid)) and ok

    # Decode every line's ids (HF keeps special tokens only with skip_special_tokens=False), then ids
    # of token pieces that are not UTF-8 on their own (both sides must give U+FFFD).
    # The corpus has no '\n', so each decoded text is one output line ('\r' and U+2028 stay inside).
    partial = [hf.encode("\U0001fae0", add_special_tokens=False).ids[:1], [hf.token_to_id("Ã"), 220]]
    id_lists = expected + partial
    decoded = run_cli(exe, tokenizer_dir, b"".join((" ".join(map(str, ids)) + "\n").encode() for ids in id_lists),
                      "--decode")
    hf_decoded = [hf.decode(ids, skip_special_tokens=False) for ids in id_lists]
    if len(decoded) != len(id_lists):
        sys.exit(f"lance-quant --decode printed {len(decoded)} lines for {len(id_lists)} input lines")
    decode_mismatches = [f"ids {id_lists[i][:20]}: ours {decoded[i].decode('utf-8')!r} hf {hf_decoded[i]!r}"
                         for i in range(len(id_lists)) if decoded[i].decode("utf-8") != hf_decoded[i]]
    ok = report_mismatches("decode (incl. partial UTF-8 pieces)", decode_mismatches, len(id_lists)) and ok
    return 0 if check_added_token_options(exe, tokenizer_dir) and ok else 1


def check_added_token_options(exe: str, tokenizer_dir: Path) -> bool:
    """Qwen's added tokens use none of lstrip/rstrip/single_word/normalized=true: add some that do
    (ids after the last one, contents not in the vocabulary) and compare encode and decode."""
    import json
    import tempfile
    from tokenizers import Tokenizer

    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    next_id = max(t["id"] for t in spec["added_tokens"]) + 1
    extra = [dict(content="héllo wörld"), dict(content="ñé"),
             dict(content="<m>", special=True, lstrip=True, rstrip=True),
             dict(content="qqhi", normalized=True, single_word=True), dict(content="zzé", normalized=True),
             dict(content="zzé!", normalized=False)]
    for i, options in enumerate(extra):
        spec["added_tokens"].append({"id": next_id + i, "special": False, "normalized": False, "lstrip": False,
                                     "rstrip": False, "single_word": False, **options})
    texts = ["a  <m>  b", "qqhi there", "thisqqhi", "qqhi_", "(qqhi)", "zze\u0301 x zzé", "zze\u0301!", "zzé!",
             "x <m>\u00a0y", "héllo wörld!", "ñé", " \t<m>\t\r", "éqqhi", "日qqhi", "<m><m>  <m>"]
    id_lists = [[next_id + i] for i in range(len(extra))] + [[next_id + 1, next_id, 9707]]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
        hf = Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        ours = [parse_ids(o) for o in run_cli(exe, Path(tmp), "".join(t + "\n" for t in texts).encode())]
        ours_decoded = run_cli(exe, Path(tmp), "".join(" ".join(map(str, ids)) + "\n" for ids in id_lists).encode(),
                               "--decode")
    mismatches = [f"{texts[i]!r}: ours {ours[i]} hf {hf.encode(texts[i], add_special_tokens=False).ids}"
                  for i in range(len(texts)) if ours[i] != hf.encode(texts[i], add_special_tokens=False).ids]
    mismatches += [f"decode {ids}: ours {ours_decoded[i]!r} hf {hf.decode(ids, skip_special_tokens=False)!r}"
                   for i, ids in enumerate(id_lists)
                   if ours_decoded[i].decode("utf-8") != hf.decode(ids, skip_special_tokens=False)]
    return report_mismatches("added-token options (lstrip/rstrip/single_word/normalized)", mismatches,
                             len(texts) + len(id_lists))


if __name__ == "__main__":
    sys.exit(main())
