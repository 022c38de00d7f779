"""Benchmark reading SFT examples, side by side on the same data.

Run: `.venv/bin/python benchmarks/sft_loader_bench.py`. Prepares real GSM8K (the shared copy when
present, else the bundled 600 examples) as one shard and as 1 MiB shards, then reads every example
in a shuffled order — what an SFT epoch does — through `midmix.loaders.SftDataset` and through
`streaming.StreamingDataset` (the standard reader of the same MDS files). Prints examples/s and
examples per CPU-second, and the ratio midmix / streaming. A per-example cost that does not grow with
the shard size is the point: the reader keeps shards mapped and reads one example.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import midmix
import numpy as np
from midmix.loaders import SftDataset
from timing import measure

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PYTHIA = ROOT / "tests" / "fixtures" / "pythia.json"


def read_all_midmix(path: Path, order: np.ndarray) -> int:
    ds = SftDataset(path)
    return sum(len(ds[int(i)][0]) for i in order)


def read_all_streaming(path: Path, order: np.ndarray) -> int:
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(path), shuffle=False, batch_size=1, num_canonical_nodes=1)
    return sum(len(ds[int(i)]["input_ids"]) for i in order)


def main() -> None:
    src = SHARED / "sft" / "gsm8k.parquet"
    if not src.exists():
        src = ROOT / "demo" / "data" / "gsm8k.jsonl"
    work = Path(tempfile.mkdtemp(prefix="midmix-sft-bench-"))
    try:
        print(f"data: {src.name}")
        print(f"{'shards':<16}{'reader':<12}{'examples/s':>12}{'per CPU-s':>12}{'midmix / streaming':>20}")
        for label, limit in (("one shard", None), ("1 MiB shards", 1 << 20)):
            out = work / label.replace(" ", "-")
            m = midmix.prepare(
                "gsm8k", [src], tokenizer=PYTHIA, seq_len=1024, mode="sft", out=out, size_limit=limit, register=False
            )
            n = m.counts.samples
            order = np.random.default_rng(0).permutation(n)
            results = {}
            for name, fn in (("midmix", read_all_midmix), ("streaming", read_all_streaming)):
                got: list[int] = []
                wall, cpu = measure(lambda fn=fn, got=got, out=out, order=order: got.append(fn(out, order)))
                results[name] = (n / wall, n / cpu, got[0])
            assert results["midmix"][2] == results["streaming"][2], "the two readers disagree on the tokens"
            for name, (rate, per_cpu, _) in results.items():
                ratio = f"{results['midmix'][0] / results['streaming'][0]:.2f}x" if name == "midmix" else ""
                print(f"{label:<16}{name:<12}{rate:>12,.0f}{per_cpu:>12,.0f}{ratio:>20}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
