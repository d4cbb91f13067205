# Two commands on a fresh machine:  `make demo` (set up, serve the offline demo)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test install browser bench

demo: install  ## set up, then serve the built-in demo world at http://127.0.0.1:7860 (offline)
	HF_HUB_OFFLINE=1 $(BIN)/python app.py

test: install browser  ## set up, then run every test offline
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

install: $(VENV)/.installed

# torch is pinned in requirements.txt (as a Space needs it); on a CPU-only Linux machine install the CPU wheel
# first: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu (README, "CPU-only machines").
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The browser test drives Debian's chromium (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed (needs root: apt-get install chromium); the browser test will be skipped"

bench: install  ## performance ratios, written to bench/RESULTS.md by hand from the output
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py
