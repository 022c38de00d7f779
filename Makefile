# `make demo` and `make test` work on a fresh machine: they create .venv and build midmix first.
# The demo needs only the core (the Rust extension, click, numpy, pyyaml); the test suite also
# installs the hf, plot, train, track and dev extras: the test oracles (tokenizers, mosaicml-streaming), the training
# stack (torch, Composer), the experiment trackers (wandb, mlflow-skinny) and the benchmark tools.
PY ?= python3
VENV := .venv
CORE := $(VENV)/.core
DEV := $(VENV)/.dev

.PHONY: setup demo test lint bench clean tiny-pipeline

setup: $(DEV)

$(CORE):
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip 'maturin>=1.7,<2'
	touch $(CORE)

# Builds the extension (release profile) into python/midmix and installs the package with its core
# dependencies; re-run when Rust sources or the package metadata change.
$(VENV)/.built: $(CORE) pyproject.toml Cargo.toml Cargo.lock $(shell find rust -name '*.rs' -o -name Cargo.toml)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q
	touch $(VENV)/.built

$(DEV): $(CORE) pyproject.toml
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q --extras hf,plot,train,track,dev
	touch $(DEV)

demo: $(VENV)/.built
	bash demo/run.sh

tiny-pipeline: $(DEV)
	bash examples/tiny_pipeline.sh

test: $(DEV) $(VENV)/.built
	cargo test --workspace --exclude midmix-py -q
	$(VENV)/bin/python -m pytest -q --durations=25

lint: $(DEV) $(VENV)/.built
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks

bench: $(DEV) $(VENV)/.built
	$(VENV)/bin/python benchmarks/prepare_bench.py
	$(VENV)/bin/python benchmarks/mix_bench.py
	$(VENV)/bin/python benchmarks/stats_bench.py
	$(VENV)/bin/python benchmarks/sft_loader_bench.py

clean:
	rm -rf $(VENV) target demo-out bench-out tiny-out
