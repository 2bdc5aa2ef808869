# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned explicitly: on these machines torch==2.13.0 is a local CPU wheel, any other
# torch request pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install demo test test-fast ui bench bench-memory bench-peers install-torchrec gpu-check clean-outputs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]' $(TORCH)
	# MovieLens-100K ships inside this wheel; the tests read it from site-packages, never from git.
	$(BIN)/pip install -q --no-deps recbole==1.2.1
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/fiited-bench -m experiment=demo
	$(BIN)/fiited-report --experiment demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# the MLflow UI on http://127.0.0.1:$(PORT) (prints the URL once it answers): make ui PORT=5050
PORT ?= 5000
ui: install
	$(BIN)/python -m reports.ui --port $(PORT)

bench: install
	THP_MEM_ALLOC_ENABLE=1 $(BIN)/fiited-kernels --json bench-kernels.json

# Every method in its own process at Criteo Kaggle's 33.76M ids (D=16): ledger, measured peak,
# peak RSS, events. ~2.5 GB RAM for uniform; about 15-25 minutes on 2 cores.
bench-memory: install
	$(BIN)/python -m benchmark.memory_bench --out reports/results/memory_kaggle

bench-peers: install-torchrec
	THP_MEM_ALLOC_ENABLE=1 $(BIN)/fiited-kernels --json bench-kernels.json

# The TorchRec adapter's extra, then torchrec==1.8.0 with --no-deps: it requires fbgemm-gpu
# (the CUDA build); fbgemm-gpu-cpu==1.8.0 from the extra is the one that loads with this torch.
install-torchrec: install
	$(BIN)/pip install -q -e '.[torchrec]' $(TORCH)
	$(BIN)/pip install -q --no-deps torchrec==1.8.0

gpu-check:
	python3 scripts/gpu_check.py --out gpu_check.md

clean-outputs:
	rm -rf outputs multirun reports/out
