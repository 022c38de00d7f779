#!/usr/bin/env bash
# The README's first command: prepare the two bundled sources, build a scheduled mix of them,
# inspect it and export it as MDS.
set -euo pipefail
cd "$(dirname "$0")/.."
# $MIDMIX, else this checkout's .venv (make demo), else the midmix on PATH (installed with pip).
if [ -z "${MIDMIX:-}" ]; then
  if [ -x .venv/bin/midmix ]; then MIDMIX=.venv/bin/midmix; else MIDMIX=midmix; fi
fi
OUT=demo-out
TOK=tests/fixtures/pythia.json
rm -rf "$OUT"
$MIDMIX prepare prose demo/data/prose.jsonl --tokenizer "$TOK" --seq-len 512 --data-root "$OUT"
echo
$MIDMIX prepare code demo/data/code.jsonl.zst --tokenizer "$TOK" --seq-len 512 --data-root "$OUT"
echo
$MIDMIX build-mix --schedule demo/schedule.yaml --global-batch 16 --seed 0 --data-root "$OUT" --out "$OUT/mix"
echo
$MIDMIX inspect "$OUT/mix" --show 40 | head -40
echo
# The mix is an index over the two sources; this writes the same mix as MDS shards for StreamingDataset.
$MIDMIX export "$OUT/mix" --out "$OUT/mix-mds"
