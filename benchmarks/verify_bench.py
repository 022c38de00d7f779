"""What midmix's integrity checks cost, side by side with the standard tools on the same shards.

Run: `.venv/bin/python benchmarks/verify_bench.py [--mb 1024]`. Prepares a source of about `--mb` MB of
token shards (from the shared corpora when present, else the demo data, repeated with a counter so no two
documents are equal), then measures, with the page cache warm:

1. hashing: `midmix verify` (every shard against its recorded xxh3_64 and any other hashes, every id
   against the vocabulary) in MB per CPU-second, against the `xxhash` Python package's xxh3_64 and
   `hashlib.sha1` over the same files;
2. the first epoch's slowdown from lazy verification: one pass of the midmix loader (`MixDataset`, batches
   of int64 tensors) in a fresh process, where each shard is hashed when first mapped, against the second
   pass in that process (nothing left to check), and against a numpy memmap of the same shards sliced
   into the same batches (no checks at all).

Prints ratios; quote those (and MB per CPU-second), not absolute times, on shared machines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import measure

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "corpora" / "samples"
PYTHIA = ROOT / "tests" / "fixtures" / "pythia.json"
SEQ_LEN = 2048
BATCH = 16

# Runs in a fresh process: the first pass maps (and hashes) every shard, the second reads mapped ones.
LOADER = """
import sys, time, resource, numpy as np
from midmix.loaders import MixDataset
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
ds = MixDataset(sys.argv[1], BATCH, rank=0, world_size=1)
out = []
for _ in range(2):
    c = cpu()
    for step in range(len(ds)):
        ds.batch(step)
    out.append(cpu() - c)
# The same batches from a numpy memmap of the raw shards: no checks.
import json, pathlib
d = pathlib.Path(sys.argv[1])
idx = json.loads((d / "index.json").read_text())
c = cpu()
for s in idx["shards"]:
    raw = np.memmap(d / s["raw_data"]["basename"], dtype=np.uint8, mode="r")
    n = s["samples"]
    off = raw[4:4 + 4 * (n + 1)].view("<u4")
    body = raw[off[0]:off[-1]].view("<u2").reshape(n, -1)
    for i in range(0, n - BATCH + 1, BATCH):
        np.ascontiguousarray(body[i:i + BATCH]).astype(np.int64)
out.append(cpu() - c)
print(*out)
""".replace("BATCH", str(BATCH))


def corpus(path: Path, mb: int) -> None:
    """About 2·mb MB of text (≈ mb MB of uint16 tokens), documents made unique by a counter."""
    docs = []
    for f in sorted(SHARED.glob("*.jsonl")) if SHARED.is_dir() else [ROOT / "demo" / "data" / "prose.jsonl"]:
        docs += [json.loads(line)["text"] for line in f.read_text().splitlines() if line.strip()]
    target, written, i = 2 * mb * 2**20, 0, 0
    with open(path, "w") as out:
        while written < target:
            line = json.dumps({"text": f"[{i}] {docs[i % len(docs)]}"}) + "\n"
            out.write(line)
            written += len(line)
            i += 1


def hash_files(files: list[Path], fn) -> None:
    for f in files:
        fn(f.read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256, help="MB of token shards to prepare")
    args = ap.parse_args()
    import midmix

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus(tmp / "in.jsonl", args.mb)
        src = tmp / "src"
        midmix.prepare(
            "bench", [tmp / "in.jsonl"], tokenizer=PYTHIA, seq_len=SEQ_LEN, out=src, register=False, progress=True
        )
        files = sorted(src.glob("shard.*.mds"))
        mb = sum(f.stat().st_size for f in files) / 2**20
        hash_files(files, lambda b: None)  # warm the page cache
        print(f"\n{mb:.0f} MB of shards, {len(files)} shards, seq_len {SEQ_LEN}")

        _, verify_cpu = measure(lambda: midmix.verify(src))
        rows = [("midmix verify (xxh3_64 + ids)", verify_cpu)]
        try:
            import xxhash

            xxh3 = measure(lambda: hash_files(files, xxhash.xxh3_64_digest))[1]
            rows.append(("xxhash.xxh3_64 (Python package)", xxh3))
        except ImportError:
            pass
        rows.append(("hashlib.sha1", measure(lambda: hash_files(files, lambda b: hashlib.sha1(b).digest()))[1]))
        print("\n1. hashing every shard: MB per CPU-second (ratio to midmix verify)")
        for name, cpu in rows:
            print(f"   {name:34s} {mb / cpu:8.0f} MB/CPU-s   {cpu / verify_cpu:5.2f}×")

        r = subprocess.run([sys.executable, "-c", LOADER, str(src)], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"the loader pass failed:\n{r.stderr}")
        first, second, raw = map(float, r.stdout.split())
        print("\n2. one epoch of the loader (CPU seconds; ratio to the second pass)")
        for name, cpu in (
            ("first pass (each shard hashed when first mapped)", first),
            ("second pass (mapped and checked already)", second),
            ("numpy memmap, same batches, no checks", raw),
        ):
            print(f"   {name:50s} {cpu:7.2f} s   {cpu / second:5.2f}×   {mb / cpu:7.0f} MB/CPU-s")
        print(
            f"\nlazy verification adds {first - second:.2f} CPU-s to the first epoch "
            f"({100 * (first - second) / second:.0f}% of a pass; {mb / max(first - second, 1e-9):.0f} MB/CPU-s)"
        )


if __name__ == "__main__":
    main()
