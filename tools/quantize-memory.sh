#!/bin/sh
# Peak RSS of `quantize --scheme awq-int4` on the full-dims 2-layer synthetic 3B, with text + chat + t2i
# calibration and the same plus x2t_image (or x2t_video; a full-size synthetic ViT), run side by side under
# /usr/bin/time -v.
#   sh tools/quantize-memory.sh [LANCE_QUANT] [WORK_DIR] [x2t_image|x2t_video]   (needs ~7 GB of disk in WORK_DIR)
set -eu
LQ=${1:-build/lance-quant}
W=${2:-/tmp/lq-quantize-memory}
X2T=${3:-x2t_image}
mkdir -p "$W"
M=$W/l3b-2
V=$W/vit-full
[ -f "$M/model.safetensors" ] || "$LQ" synth --preset lance-3b --layers 2 --dtype f32 --out "$M"
[ -f "$V/vit.safetensors" ] || "$LQ" synth --vit qwen2.5-vl --out "$V"
COMMON="--scheme awq-int4 --group-size 128 --calib text:data/calib/text.txt --calib chat:data/calib/chat.jsonl
  --max-tokens 4096 --calib t2i:data/calib/t2i_prompts.txt --max-prompts 2 --steps 4 --awq-rows 256 --force --json"
# shellcheck disable=SC2086
/usr/bin/time -v "$LQ" quantize "$M" $COMMON --out "$W/q-text-t2i" > "$W/q-text-t2i.json" 2> "$W/q-text-t2i.log" &
# shellcheck disable=SC2086
/usr/bin/time -v "$LQ" quantize "$M" $COMMON --calib "$X2T:data/calib/$X2T.jsonl" --vit-dir "$V" \
  --out "$W/q-x2t" > "$W/q-x2t.json" 2> "$W/q-x2t.log" &
wait
for r in q-text-t2i q-x2t; do
  printf '%-12s peak RSS %s kB, CPU %s + %s s\n' "$r" \
    "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/$r.log")" \
    "$(sed -n 's/.*User time (seconds): //p' "$W/$r.log")" "$(sed -n 's/.*System time (seconds): //p' "$W/$r.log")"
done
