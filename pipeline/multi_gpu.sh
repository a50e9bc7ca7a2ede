#!/usr/bin/env bash
# One node, N GPUs: sharded extraction and DistributedDataParallel training, both through torchrun.
#   VIDEOS=data/videos ANNOTATIONS=data/train.json NPROC=4 bash pipeline/multi_gpu.sh
#   DRY_RUN=1 bash pipeline/multi_gpu.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"

VIDEOS=${VIDEOS:-data/videos}
ANNOTATIONS=${ANNOTATIONS:-data/train.json}
CACHE=${CACHE:-cache}
RUN=${RUN:-runs/multi}
CONFIG=${CONFIG:-configs/mark1-vjepa2-qwen3.yaml}
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l || echo 1)}

# Each rank encodes its share of the videos (balanced by file size) into its own shards.
run torchrun --nproc-per-node "$NPROC" -m mark1 extract --videos "$VIDEOS" --cache "$CACHE" --config "$CONFIG"
# train.batch_size is the global batch, split over the ranks; each rank holds its own frozen LLM.
run torchrun --nproc-per-node "$NPROC" -m mark1 train --cache "$CACHE" --annotations "$ANNOTATIONS" \
    --out "$RUN" --config "$CONFIG" ${RESUME:+--resume}
