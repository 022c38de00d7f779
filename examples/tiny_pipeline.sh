#!/usr/bin/env bash
# The whole midtraining workflow at toy scale, on CPU, from the bundled demo data (about 8 minutes on
# 2 cores): prepare → scheduled build-mix → pretrain a base → branch a midtraining run from the base's
# step 60 → SFT both on 160 real GSM8K examples → a table of in-domain and forgetting losses.
# Run from a checkout after the README's set-up (`make setup`), or as `make tiny-pipeline`.
set -euo pipefail
cd "$(dirname "$0")/.."
# $MIDMIX, else this checkout's .venv (make setup), else the midmix on PATH (installed with pip).
if [ -z "${MIDMIX:-}" ]; then
  if [ -x .venv/bin/midmix ]; then MIDMIX=.venv/bin/midmix; else MIDMIX=midmix; fi
fi
OUT=tiny-out
D=$OUT/data
TOK=tests/fixtures/pythia.json
rm -rf "$OUT"

echo "== prepare: general prose, code, their held-out sets, and GSM8K for SFT"
for src in prose:prose.jsonl code:code.jsonl.zst prose_val:prose_val.jsonl code_val:code_val.jsonl; do
  $MIDMIX prepare "${src%%:*}" "demo/data/${src#*:}" --tokenizer $TOK --seq-len 128 --data-root $D --quiet
done
$MIDMIX prepare gsm8k demo/data/gsm8k.jsonl --mode sft --tokenizer $TOK --seq-len 256 --data-root $D --quiet

echo "== build-mix: the base's prose stream, and the scheduled code mix that branches from it at step 60"
$MIDMIX build-mix --weights prose=1 --samples 960 --global-batch 8 --seed 0 --data-root $D --out $D/base-mix --quiet
$MIDMIX build-mix --schedule recipes/tiny/code-mix.yaml --global-batch 8 --seed 0 --data-root $D --out $D/code-mix

echo "== pretrain the base (120 steps), then branch the midtraining run from its step 60"
$MIDMIX train recipes/tiny/pretrain.yaml
$MIDMIX train recipes/tiny/midtrain.yaml

echo "== SFT both on GSM8K (prompt masked, 4 epochs)"
$MIDMIX train recipes/tiny/sft.yaml run_name=sft-base run_dir=$OUT/runs/sft-base model.init_from=$OUT/runs/base
$MIDMIX train recipes/tiny/sft.yaml run_name=sft-midtrain-code run_dir=$OUT/runs/sft-midtrain-code \
  model.init_from=$OUT/runs/midtrain-code

echo
echo "== after SFT: in-domain (GSM8K validation) and forgetting (held-out prose) losses"
$MIDMIX report $OUT/runs/sft-base $OUT/runs/sft-midtrain-code $OUT/runs/base $OUT/runs/midtrain-code \
  --out $OUT/report.png
