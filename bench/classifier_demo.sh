#!/usr/bin/env bash
# The demo world's three-task classifier (shape, colour, count from the store's metadata), trained heads-only,
# fine-tuned with a frozen backbone, and fine-tuned end to end for a short run; each against zero-shot on the
# same test split. Figures go to bench/RESULTS.md. About 10-15 minutes on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/clip-search-classifier-demo}
rm -rf "$OUT"
export HF_HUB_OFFLINE=1
TASKS=(--task shape:shape --task color:color --task count:count)
lscpu | grep -o 'amx[a-z_0-9]*\|avx512[a-z_0-9]*\|avx2' | sort -u | tr '\n' ' '; echo "($(nproc) cores), $(date -u +%F)"
run() { SECONDS=0; echo "\$ clip-search train-classifier embeddings/demo ${TASKS[*]} $*"; .venv/bin/python -m clip_search.cli train-classifier embeddings/demo "${TASKS[@]}" --no-progress "$@" 2>&1 | grep -v "^INFO"; echo "(${SECONDS} s wall)"; }
run --out "$OUT/heads"
run --out "$OUT/finetune-frozen" --depth finetune --freeze backbone
run --out "$OUT/finetune-all" --depth finetune --freeze none --layer-lr-decay 0.7 --epochs 30
