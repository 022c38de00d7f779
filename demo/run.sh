#!/usr/bin/env bash
# The README's first command: prepare the two bundled sources and inspect one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
MIDMIX=.venv/bin/midmix
OUT=demo-out
TOK=tests/fixtures/pythia.json
rm -rf "$OUT"
$MIDMIX prepare prose demo/data/prose.jsonl --tokenizer "$TOK" --seq-len 2048 --out "$OUT/prose" --data-root "$OUT"
echo
$MIDMIX prepare code demo/data/code.jsonl.zst --tokenizer "$TOK" --seq-len 2048 --out "$OUT/code" --data-root "$OUT"
echo
$MIDMIX inspect code --data-root "$OUT" --show 0 | head -40
