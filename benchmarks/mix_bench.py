"""Benchmark `build-mix` and the midmix loader against the standard tools, side by side.

Run: `.venv/bin/python benchmarks/mix_bench.py` (uses the shared corpora when present, else the
bundled demo data). Prints MB/s and ratios; compare ratios on shared machines.

1. Building a 20% code / 80% prose mix, with no repeats and with 6 passes over prose: `build-mix`
   (an index over the sources) and `midmix export` of it (MDS shards holding the tokens, what
   `--materialize` writes), in seconds and bytes on disk, against `cp -r` of the source shards (warm
   page cache); and iterating the same samples through `StreamingDataset` with two
   `Stream(proportion=…)`s (what a user does without midmix).
2. Reading the mix in training order: the midmix loader (`MixDataset`, per-device batches as int64
   tensors) over the index mix and over its export, vs a numpy memmap of the same tokens in the same
   order sliced into the same batches and converted the same way, vs `StreamingDataset(shuffle=False)`
   under a DataLoader over the export.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import best_of

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PYTHIA = ROOT / "tests" / "fixtures" / "pythia.json"


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8, help="per-device batch for the loader benchmark")
    ap.add_argument(
        "--read-samples", type=int, default=4000, help="samples to read through StreamingDataset with two Streams"
    )
    args = ap.parse_args()
    import midmix

    work = Path(tempfile.mkdtemp(prefix="midmix-mixbench-"))
    os.environ["TMPDIR"] = str(work)
    try:
        corpora = SHARED / "corpora"
        if SHARED.exists():
            inputs = {
                "code": [corpora / "starcoder_like.parquet"],
                "prose": [corpora / f for f in ("c4_like.parquet", "dclm_like.parquet", "flan_like.parquet")],
            }
        else:
            demo = ROOT / "demo" / "data"
            inputs = {"code": [demo / "code.jsonl.zst"], "prose": [demo / "prose.jsonl"]}
        src = {}
        for name, paths in inputs.items():
            src[name] = work / name
            midmix.prepare(name, [str(p) for p in paths], tokenizer=PYTHIA, seq_len=args.seq_len, out=src[name])
        n = {k: json.loads((v / "midmix.json").read_text())["counts"]["samples"] for k, v in src.items()}
        src_mb = (dir_bytes(src["code"]) + dir_bytes(src["prose"])) / 1e6
        print(
            f"sources: code {n['code']:,} samples, prose {n['prose']:,} ({src_mb:.0f} MB, seq_len {args.seq_len}), "
            f"{os.cpu_count()} cores\n"
        )

        def cp() -> None:
            dst = work / "cp"
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir()
            subprocess.run(["cp", "-r", str(src["code"]), str(src["prose"]), str(dst)], check=True)

        t_cp = best_of(3, cp)
        print("== building a 20% code / 80% prose mix: seconds (best of 3) and bytes on disk ==")
        print(
            f"{'mix':<28}{'samples':>12}{'index s':>9}{'index MB':>10}{'export s':>10}{'export MB':>11}"
            f"{'cp s':>8}{'cp MB':>8}{'export/index MB':>17}"
        )
        no_repeat = int(min(n["code"] / 0.2, n["prose"] / 0.8))
        mix = work / "mix"
        for label, total in (("no repeat", no_repeat), ("6 passes over prose", int(6 * n["prose"] / 0.8))):
            out = work / f"mix-{total}"

            def build(out: Path = out, total: int = total) -> None:
                midmix.build_mix(
                    [midmix.Phase.samples(total, {"code": 0.2, "prose": 0.8})],
                    out,
                    sources={"code": src["code"], "prose": src["prose"]},
                    overwrite=True,
                    on_exhaust="repeat",
                    register=False,
                )

            def export(out: Path = out) -> None:
                midmix.export(out, work / "export", overwrite=True)

            t_index = best_of(3, build)
            t_export = best_of(3, export)
            index_mb, export_mb = dir_bytes(out) / 1e6, dir_bytes(work / "export") / 1e6
            print(
                f"{label:<28}{total:>12,}{t_index:>9.2f}{index_mb:>10.2f}{t_export:>10.2f}{export_mb:>11.1f}"
                f"{t_cp:>8.2f}{src_mb:>8.1f}{export_mb / index_mb:>16.0f}x"
            )
            if total == no_repeat:
                shutil.copytree(out, mix)
                shutil.copytree(work / "export", work / "mix-export")
        total = no_repeat
        try:
            from streaming import Stream, StreamingDataset

            k = min(args.read_samples, total)
            streams = [Stream(local=str(src["code"]), proportion=0.2), Stream(local=str(src["prose"]), proportion=0.8)]
            ds = StreamingDataset(streams=streams, shuffle=False, batch_size=args.batch, epoch_size=total)
            t0 = time.perf_counter()
            for i, _ in enumerate(ds):
                if i + 1 >= k:
                    break
            t_sd = time.perf_counter() - t0
            rate_sd = k / t_sd
            print(
                f"\nStreamingDataset 2x Stream(proportion), iterate  {rate_sd * args.seq_len / 1e6:9.2f} M tokens/s"
                f"  ({k:,} samples; the no-repeat mix of {total:,} would take {total / rate_sd:.1f} s)"
            )
        except ImportError:
            print("StreamingDataset: not installed")

        print(f"\n== reading the mix in training order (per-device batch of {args.batch}, 1 rank, 0 workers) ==")
        import torch
        from midmix.loaders import MixDataset

        md = MixDataset(mix, args.batch, rank=0, world_size=1)
        md_export = MixDataset(work / "mix-export", args.batch, rank=0, world_size=1)
        steps = len(md)
        tokens = steps * args.batch * args.seq_len

        def read_all(ds: MixDataset) -> None:
            for _ in ds:  # consume like the memmap loop below: nothing is kept
                pass

        t_md = best_of(3, lambda: read_all(md))
        t_mx = best_of(3, lambda: read_all(md_export))

        flat = work / "tokens.u16"
        rows, _ = midmix.Dataset.open(mix).tokens().gather(list(range(steps * args.batch)))
        rows.astype(np.uint16).tofile(flat)
        mm = np.memmap(flat, dtype=np.uint16, mode="r").reshape(-1, args.seq_len)

        def memmap_batches() -> None:
            for s in range(steps):
                torch.from_numpy(np.asarray(mm[s * args.batch : (s + 1) * args.batch]).astype(np.int64))

        t_mm = best_of(3, memmap_batches)
        print(f"numpy memmap, same tokens and batches  {tokens / t_mm / 1e6:9.1f} M tokens/s")
        print(
            f"midmix MixDataset over the index       {tokens / t_md / 1e6:9.1f} M tokens/s"
            f"   = {100 * t_mm / t_md:.0f}% of memmap"
        )
        print(
            f"midmix MixDataset over the export      {tokens / t_mx / 1e6:9.1f} M tokens/s"
            f"   = {100 * t_mm / t_mx:.0f}% of memmap"
        )
        try:
            from streaming import StreamingDataset
            from torch.utils.data import DataLoader

            sd = StreamingDataset(
                local=str(work / "mix-export"), shuffle=False, num_canonical_nodes=1, batch_size=args.batch
            )
            # Read to the end: breaking off leaves StreamingDataset's prefetch thread running into the
            # removed work directory.
            t0 = time.perf_counter()
            k = sum(1 for _ in DataLoader(sd, batch_size=args.batch))
            t_sd = time.perf_counter() - t0
            rate = k * args.batch * args.seq_len / t_sd
            print(
                f"StreamingDataset + DataLoader (export) {rate / 1e6:9.1f} M tokens/s"
                f"   midmix over the index = x{(tokens / t_md) / rate:.1f}"
            )
        except ImportError:
            print("StreamingDataset: not installed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
