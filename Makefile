# `make demo` and `make test` work on a fresh machine: they create .venv and build midmix first.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean tiny-pipeline

setup: $(STAMP)

# Rust is built (release) by maturin through pip; the [dev] extra brings the test oracles
# (tokenizers, mosaicml-streaming, torch CPU use) and the benchmark tools.
$(STAMP): pyproject.toml Cargo.toml rust/core/Cargo.toml rust/py/Cargo.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $(STAMP)

# Rebuild the extension (release profile) when Rust sources changed since the last build.
$(VENV)/.built: $(STAMP) $(shell find rust -name '*.rs')
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --skip-install -q
	touch $(VENV)/.built

demo: $(VENV)/.built
	bash demo/run.sh

tiny-pipeline: $(VENV)/.built
	bash examples/tiny_pipeline.sh

test: $(VENV)/.built
	cargo test --workspace --exclude midmix-py -q
	$(VENV)/bin/python -m pytest -q

lint: $(VENV)/.built
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks

bench: $(VENV)/.built
	$(VENV)/bin/python benchmarks/prepare_bench.py
	$(VENV)/bin/python benchmarks/mix_bench.py
	$(VENV)/bin/python benchmarks/stats_bench.py

clean:
	rm -rf $(VENV) target demo-out bench-out tiny-out
