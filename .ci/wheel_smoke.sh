#!/usr/bin/env bash
# The release wheel as a user gets it: `make wheel` (maturin, from the same build the tests ran on: nothing is
# compiled again), installed into a clean venv with nothing else, then `midmix prepare`, `build-mix` and
# `inspect` on the bundled demo data from it.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
make -C "$REPO" -s wheel
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q "$REPO"/target/wheels/midmix-*.whl
cd "$TMP"
M="$TMP/venv/bin/midmix"
$M prepare prose "$REPO/demo/data/prose.jsonl" --tokenizer "$REPO/tests/fixtures/pythia.json" --seq-len 512 --quiet
$M prepare code "$REPO/demo/data/code.jsonl.zst" --tokenizer "$REPO/tests/fixtures/pythia.json" --seq-len 512 --quiet
$M build-mix --schedule "$REPO/demo/schedule.yaml" --global-batch 16 --out mix --quiet
$M inspect mix | grep -q "(exact)"
"$TMP/venv/bin/python" -c "import midmix; d = midmix.Dataset.open('mix'); assert d.num_samples == d.manifest.total_samples > 0; print('wheel ok:', d.num_samples, 'samples')"
