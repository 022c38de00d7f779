"""Benchmark unigram counting, side by side on the same data.

Run: `.venv/bin/python benchmarks/stats_bench.py`. Prints M tokens/s and MB/s; compare ratios.

1. From a prepared MDS dataset: `midmix stats` (UnigramStats.from_dataset) vs numpy `bincount` over the
   same tokens already in memory (the numpy figure excludes reading them, which favours numpy).
2. From raw text: counting (tokenize + count) vs `midmix prepare` (tokenize + pack + write) on the
   same files: counting should run at prepare's speed or better.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import midmix
import numpy as np
from midmix.proximity import UnigramStats
from timing import best_of

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PYTHIA = ROOT / "tests" / "fixtures" / "pythia.json"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="midmix-statsbench-"))
    try:
        if SHARED.exists():
            inputs = [SHARED / "corpora" / f for f in ("c4_like.parquet", "starcoder_like.parquet")]
        else:
            inputs = [ROOT / "demo" / "data" / "prose.jsonl", ROOT / "demo" / "data" / "code.jsonl.zst"]
        ds = work / "ds"
        t_prep = best_of(
            1, lambda: midmix.prepare("b", [str(i) for i in inputs], tokenizer=PYTHIA, seq_len=2048, out=ds)
        )
        report = json.loads((ds / "midmix.json").read_text())
        mb = report["counts"]["text_bytes"] / 1e6
        print(
            f"data: {mb:.0f} MB of text, {report['counts']['tokens']:,} tokens in "
            f"{report['counts']['samples']:,} samples; {os.cpu_count()} cores\n"
        )

        print("== from a prepared dataset ==")
        t_ds = best_of(3, lambda: UnigramStats.from_dataset(ds))
        tokens, _ = midmix.Dataset.open(ds).tokens().gather(list(range(report["counts"]["samples"])))
        flat = tokens.reshape(-1)
        n = flat.size
        t_np = best_of(3, lambda: np.bincount(flat, minlength=50277))
        print(f"midmix stats (reads the shards)   {n / t_ds / 1e6:9.1f} M tokens/s")
        print(f"numpy bincount (tokens in memory) {n / t_np / 1e6:9.1f} M tokens/s   midmix = x{t_np / t_ds:.2f}")

        print("\n== from raw text ==")
        t_raw = best_of(1, lambda: UnigramStats.from_files(inputs, PYTHIA))
        print(f"midmix prepare (tokenize+pack+write) {mb / t_prep:7.1f} MB/s")
        print(f"midmix stats from raw (tokenize+count) {mb / t_raw:5.1f} MB/s   = x{t_prep / t_raw:.2f} of prepare")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
