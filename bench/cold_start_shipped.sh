#!/bin/bash
# A 25k store: made by `python bench/app_memory.py` (STORE_25K overrides). Run from the repository root; the first
# round of D includes the one-time ONNX export of the demo student when the cache is new: leave it out.
# Interleaved: import gradio,torch,transformers  vs  the app's first answer (app.py's load path) on a 25k store.
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False CLIP_SEARCH_CACHE=${CLIP_SEARCH_CACHE:-/tmp/clip-search-app-memory/cache}
PY=$(dirname "$0")/../.venv/bin/python
for r in 1 2 3 4 5; do
  /usr/bin/time -f "A %e" $PY -c "import gradio, torch, transformers" 2>&1 | tail -1
  /usr/bin/time -f "B %e" $PY -c "
import os; os.environ.setdefault('TRANSFORMERS_VERBOSITY','error')
from clip_search.ui import load_app
engine, demo = load_app('${STORE_25K:-/tmp/clip-search-app-memory/store-25000}')
engine.search('a photo of a dog on the beach', top_k=10)" 2>&1 | tail -1
  /usr/bin/time -f "C %e" $PY -c "import torch, transformers" 2>&1 | tail -1
  /usr/bin/time -f "D %e" $PY -m clip_search.cli search $(dirname "$0")/../embeddings/demo "ein roter Stern" --top-k 3 2>&1 >/dev/null | tail -1
done
