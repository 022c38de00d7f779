# `make demo` and `make test` work on a fresh machine: they create .venv and build midmix first.
# The demo needs only the core (the Rust extension, click, numpy, pyyaml); the test suite also
# installs the hf, plot, train, track and dev extras: the test oracles (tokenizers, mosaicml-streaming), the training
# stack (torch, Composer), the experiment trackers (wandb, mlflow-skinny), pytest-xdist, mypy and the benchmark tools.
# Each step of `make test` and `make lint` runs through .ci/timed, which writes its wall and CPU seconds to
# $MIDMIX_PHASES when that is set (`.ci/run` prints them as a table).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
MATURIN := VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin
CORE := $(VENV)/.core
BUILT := $(VENV)/.built
DEV := $(VENV)/.dev
EXTRAS := --extra hf --extra plot --extra train --extra track --extra dev
RUST_SOURCES := Cargo.toml Cargo.lock $(shell find rust -name '*.rs' -o -name Cargo.toml)
TIMED := .ci/timed
# pytest-xdist workers: each module runs in one worker, the Slurm modules share one (see tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=30

# clippy runs as the compiler of the workspace's own crates inside the builds the tests need anyway (the
# release extension, the test binaries), so linting costs seconds instead of a `cargo clippy` check build of
# every dependency (4 minutes on 2 cores). This is how cargo-clippy drives clippy-driver: CLIPPY_ARGS holds
# its flags joined by __CLIPPY_HACKERY__. Without clippy-driver, `make lint` runs `cargo clippy` itself.
CLIPPY_DRIVER := $(shell command -v clippy-driver 2>/dev/null)
ifneq ($(CLIPPY_DRIVER),)
LINTED := RUSTC_WORKSPACE_WRAPPER=$(CLIPPY_DRIVER) CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
endif
CARGO_TEST := cargo test --workspace --exclude midmix-py -q

.PHONY: setup demo test test-all lint wheel bench clean tiny-pipeline

setup: $(DEV)

$(CORE):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'uv>=0.5' 'maturin>=1.7,<2'
	touch $(CORE)

# The demo's environment: the core dependencies, the extension (release profile) compiled into
# python/midmix and midmix installed editable. Re-run when Rust sources or the package metadata change.
$(BUILT): $(CORE) pyproject.toml $(RUST_SOURCES)
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python -r pyproject.toml
	$(MATURIN) develop --release -q --uv
	touch $(BUILT)

# The test environment, three jobs at once: every extra's packages are installed (network, disk) while the
# extension (release) and the Rust test binaries (dev) compile, both linted; then midmix is installed editable
# over that build (no second compile). Bytecode is compiled at install: importing Composer from sources
# that were never compiled costs 15 CPU-seconds in every training process, against 6.
$(DEV): $(CORE) pyproject.toml $(RUST_SOURCES)
	$(TIMED) python-packages $(UV) pip install -q --compile-bytecode --python $(BIN)/python -r pyproject.toml \
	  $(EXTRAS) & deps=$$!; \
	  $(TIMED) rust-test-build env $(LINTED) $(CARGO_TEST) --no-run & tests=$$!; \
	  $(TIMED) rust-release-build env $(LINTED) $(MATURIN) develop --release -q --skip-install; built=$$?; \
	  wait $$deps && wait $$tests && exit $$built
	env $(LINTED) $(MATURIN) develop --release -q --uv
	touch $(DEV) $(BUILT)

demo: $(BUILT)
	bash demo/run.sh

tiny-pipeline: $(DEV)
	bash examples/tiny_pipeline.sh

# The default tier: everything but the tests marked `slow` (listed in the README).
test: $(DEV)
	$(TIMED) cargo-test env $(LINTED) $(CARGO_TEST)
	$(TIMED) pytest $(PYTEST) -m 'not slow'

test-all: $(DEV)
	$(TIMED) cargo-test env $(LINTED) $(CARGO_TEST)
	$(TIMED) pytest-all $(PYTEST)

# cargo fmt, clippy (through the builds above, which are current after `make test`: nothing recompiles), ruff,
# mypy over python/midmix (settings in pyproject.toml) and stubtest: the types of _core.pyi against the built module.
lint: $(DEV)
	$(TIMED) lint bash -c 'cargo fmt --all -- --check && $(BIN)/ruff check python tests benchmarks && $(BIN)/ruff format --check python tests benchmarks'
	$(TIMED) mypy $(BIN)/python -m mypy
	$(TIMED) stubtest $(BIN)/python -m mypy.stubtest midmix._core --mypy-config-file pyproject.toml \
	  --allowlist .ci/stubtest-allowlist.txt
ifneq ($(CLIPPY_DRIVER),)
	$(TIMED) clippy env $(LINTED) $(CARGO_TEST) --no-run
else
	$(TIMED) clippy cargo clippy --workspace --all-targets -- -D warnings
endif

# The release wheel, from the build the tests ran on (same interpreter and flags: cargo has nothing to do).
wheel: $(DEV)
	rm -rf target/wheels
	env $(LINTED) $(MATURIN) build --release -q -i $(BIN)/python -o target/wheels

bench: $(DEV)
	$(BIN)/python benchmarks/prepare_bench.py
	$(BIN)/python benchmarks/mix_bench.py
	$(BIN)/python benchmarks/stats_bench.py
	$(BIN)/python benchmarks/sft_loader_bench.py
	$(BIN)/python benchmarks/verify_bench.py

clean:
	rm -rf $(VENV) target demo-out bench-out tiny-out
