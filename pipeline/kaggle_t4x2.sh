#!/usr/bin/env bash
# Mark-1 on Kaggle's 2 x T4: stage one on GPU 0, stage two with the projector on GPU 0 and Qwen on GPU 1,
# then submission.csv. Resumable: run it again in a new session and every stage continues where it stopped.
# The same steps as pipeline/kaggle_t4x2.ipynb (which also installs Mark-1, offline from a dataset of wheels).
#   DATA=/kaggle/input/roadbuddy WORK=/kaggle/working bash pipeline/kaggle_t4x2.sh
#   ENCODER=/kaggle/input/mark1-backbones/vjepa2-vitg-fpc64-256 LLM=/kaggle/input/mark1-backbones/Qwen3-0.6B \
#       HF_HUB_OFFLINE=1 bash pipeline/kaggle_t4x2.sh   # an offline session: the backbones from a dataset
#   DRY_RUN=1 bash pipeline/kaggle_t4x2.sh      # print the commands only
# Runs from any directory: every path in the commands is absolute, and the config a bundled name.
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA=$(absolute "${DATA:-/kaggle/input/roadbuddy}")   # holds train/ and public_test/ (videos + json)
WORK=$(absolute "${WORK:-/kaggle/working}")
CONFIG=${CONFIG:-mark1-vjepa2-qwen3}             # a bundled config name, or a YAML path
if [ -f "$CONFIG" ]; then CONFIG=$(absolute "$CONFIG"); fi
RUN=$(absolute "${RUN:-$WORK/runs/seed}")
TRAIN_JSON=$(absolute "${TRAIN_JSON:-$DATA/train/train.json}")
TEST_JSON=$(absolute "${TEST_JSON:-$DATA/public_test/public_test.json}")
# Hub ids or local model directories (HF format); unset: the config's own (hub ids, which need internet).
ENCODER=${ENCODER:-}
LLM=${LLM:-}
if [ -d "$ENCODER" ]; then ENCODER=$(absolute "$ENCODER"); fi
if [ -d "$LLM" ]; then LLM=$(absolute "$LLM"); fi
GPU0=${GPU0:-cuda:0}   # extraction and the projector
GPU1=${GPU1:-cuda:1}   # the frozen LLM
# [8, 16, 16, 1408] fp16 per 16-frame clip (ViT-g, pool 1); set 1441792 with `--set video.pool=2`.
BYTES_PER_CLIP=${BYTES_PER_CLIP:-5767168}

# The cache must fit on the disk before hours of extraction start.
videos=$(find "$DATA" -type f \( -iname '*.mp4' -o -iname '*.mkv' -o -iname '*.avi' -o -iname '*.mov' -o -iname '*.webm' \) | wc -l)
mkdir -p "$WORK"
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
need_kb=$(( videos * BYTES_PER_CLIP / 1024 * 11 / 10 ))  # 10% for HDF5 metadata and the open shard
echo "videos: $videos, the cache needs ~$(( need_kb / 1024 )) MiB, $WORK has $(( free_kb / 1024 )) MiB free"
if [ "$need_kb" -gt "$free_kb" ]; then
    echo "error: not enough disk for the cache in $WORK; free space or extract with --set video.pool=2" >&2
    exit 1
fi

# Stage one: the frozen encoder on GPU 0, once per video; skips what is cached.
run mark1 extract --videos "$DATA" --cache "$WORK/cache" --config "$CONFIG" ${ENCODER:+--encoder "$ENCODER"} \
    --device "$GPU0"

# Stage two: projector on GPU 0, frozen Qwen on GPU 1; --resume continues a run cut by the session limit.
resume=()
if [ -d "$RUN/last" ] || [ -d "$RUN/last.old" ]; then resume=(--resume); fi
run mark1 train --cache "$WORK/cache" --annotations "$TRAIN_JSON" --out "$RUN" --config "$CONFIG" \
    ${LLM:+--llm "$LLM"} --device-map "projector=$GPU0,llm=$GPU1" "${resume[@]}"

run mark1 predict --checkpoint "$RUN/best" --cache "$WORK/cache" --annotations "$TEST_JSON" \
    --out "$WORK/submission.csv" ${LLM:+--llm "$LLM"} --device-map "projector=$GPU0,llm=$GPU1"
