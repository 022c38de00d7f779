"""Benchmark `midmix prepare` against the fastest exact encoders and the standard Python pipeline.

Run: `make bench` (or `.venv/bin/python benchmarks/prepare_bench.py --mb 200 --reps 3`).

Everything runs in one process on the same JSONL, built from the shared corpora (code + prose
interleaved) when they are present, else from the bundled demo data, with the contenders' runs
interleaved (A B C D, A B C D, ...) so that a noisy neighbour slows them alike. Per contender it
prints the median of the repetitions: wall MB/s and MB per CPU-second (MB of JSONL read), the CPU
seconds per wall second (how much of the machine it used), and ratios against gigatoken's file mode.
These machines are shared and noisy: compare the ratios, not one absolute rate.

  midmix.prepare, in process the same work from Python with the encoder already loaded, as the
                             encoders below are (the CLI rows add interpreter start and loading)
  midmix prepare             end to end: JSONL → tokens + EOS → packed MDS, hashes, manifest
  midmix prepare --threads 1 the same on one thread (the pipeline's scaling is the ratio of the two)
  gigatoken encode_files     tokenize only (`JsonlFileSource`: reads and parses the JSONL itself)
  fastokens (PyPI wheel)     tokenize only, `encode_batch_flat` on texts already in memory
  Python baseline            json.loads + HF `encode_batch_fast` + `streaming.MDSWriter`, run once on
                             the first --baseline-mb MB (it is ~50x slower; its rates are per MB too)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from timing import measure

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TOKENIZERS = {"pythia": ROOT / "tests" / "fixtures" / "pythia.json", "gpt2": SHARED / "tokenizers" / "gpt2.json"}


def build_corpus(path: Path, mb: float) -> list[str]:
    """Interleave code and prose documents up to `mb` MB of JSONL; write them."""
    if SHARED.exists():
        import pyarrow.parquet as pq

        sources = [pq.read_table(SHARED / "corpora" / f, columns=["text"]).column("text").to_pylist()
                   for f in ("starcoder_like.parquet", "c4_like.parquet")]
    else:
        sources = [[json.loads(line)["text"] for line in (ROOT / "demo" / "data" / "prose.jsonl").open()]]
    texts, size, i = [], 0, 0
    with path.open("w") as f:
        while size < mb * 1e6:
            src = sources[i % len(sources)]
            t = src[(i // len(sources)) % len(src)]
            line = json.dumps({"text": t}) + "\n"
            f.write(line)
            texts.append(t)
            size += len(line.encode())
            i += 1
    return texts


def baseline_prepare(jsonl: Path, out: Path, tokenizer: Path, seq_len: int, limit: int) -> None:
    """The tuned Python pipeline: batched json.loads + HF encode_batch_fast + MDSWriter."""
    import tokenizers
    from streaming import MDSWriter

    tok = tokenizers.Tokenizer.from_file(str(tokenizer))
    eos = tok.token_to_id("<|endoftext|>")
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
    buf = np.zeros(0, dtype=dtype)
    with MDSWriter(out=str(out), columns={"tokens": f"ndarray:{np.dtype(dtype).name}:{seq_len}"}) as w:
        def flush(batch: list[str]) -> None:
            nonlocal buf
            encoded = tok.encode_batch_fast(batch, add_special_tokens=False)
            buf = np.concatenate([buf, *(np.array([*e.ids, eos], dtype=dtype) for e in encoded)])
            n = len(buf) // seq_len
            for sample in buf[:n * seq_len].reshape(n, seq_len):
                w.write({"tokens": sample})
            buf = buf[n * seq_len:]

        batch: list[str] = []
        read = 0
        with jsonl.open("rb") as f:
            for line in f:
                read += len(line)
                batch.append(json.loads(line)["text"])
                if len(batch) == 1000:
                    flush(batch)
                    batch = []
                if read >= limit:
                    break
        flush(batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="MB of JSONL [200]")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions per contender [3]")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--baseline-mb", type=float, default=8.0, help="MB the Python baseline runs on [8]; 0: skip")
    ap.add_argument("--tokenizers", default="pythia,gpt2")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="midmix-bench-"))
    os.environ["TMPDIR"] = str(work)
    try:
        jsonl = work / "corpus.jsonl"
        texts = build_corpus(jsonl, args.mb)
        mb = jsonl.stat().st_size / 1e6
        print(f"corpus: {len(texts):,} documents, {mb:.1f} MB of JSONL (code + prose), {os.cpu_count()} cores, "
              f"{args.reps} interleaved repetitions, medians\n")
        for name in args.tokenizers.split(","):
            path = TOKENIZERS[name]
            if path.exists():
                run_one(name, path, jsonl, texts, mb, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_one(name: str, path: Path, jsonl: Path, texts: list[str], mb: float, work: Path,
            args: argparse.Namespace) -> None:
    import fastokens
    import gigatoken
    import midmix as midmix_api

    midmix = str(Path(sys.executable).parent / "midmix")

    def prepare(threads: int) -> Callable[[], object]:
        cmd = [midmix, "prepare", "bench", str(jsonl), "--tokenizer", str(path), "--seq-len", str(args.seq_len),
               "--out", str(work / "midmix"), "--data-root", str(work / "root"), "--quiet", "--overwrite",
               "--threads", str(threads)]
        return lambda: subprocess.run(cmd, check=True)

    def prepare_in_process() -> object:
        return midmix_api.prepare("bench", [jsonl], tokenizer=path, seq_len=args.seq_len, out=work / "in-process",
                                  data_root=work / "root", overwrite=True, register=False)

    giga = gigatoken.Tokenizer.from_json(path.read_text())
    fast = fastokens.Tokenizer.from_file(str(path))
    prepare_in_process()  # loads the encoder, as gigatoken's and fastokens' are loaded above
    contenders: dict[str, Callable[[], object]] = {
        "midmix.prepare, in process": prepare_in_process,
        "midmix prepare (end to end)": prepare(os.cpu_count() or 1),
        "midmix prepare --threads 1": prepare(1),
        "gigatoken encode_files (tokenize only)": lambda: giga.encode_files(gigatoken.JsonlFileSource([str(jsonl)])),
        "fastokens encode_batch_flat (in memory)": lambda: fast.encode_batch_flat(texts, add_special_tokens=False),
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for _ in range(args.reps):
        for k, fn in contenders.items():
            times[k].append(measure(fn))
    rates = {k: (mb / statistics.median(w for w, _ in v), mb / statistics.median(c for _, c in v))
             for k, v in times.items()}
    cpu_per_wall = {k: statistics.median(c / w for w, c in v) for k, v in times.items()}
    if args.baseline_mb > 0:
        limit = int(args.baseline_mb * 1e6)
        w, c = measure(lambda: baseline_prepare(jsonl, work / f"baseline-{name}", path, args.seq_len, limit))
        done = min(limit, jsonl.stat().st_size) / 1e6
        k = f"Python baseline ({args.baseline_mb:g} MB)"
        rates[k], cpu_per_wall[k] = (done / w, done / c), c / w
    ref = rates["gigatoken encode_files (tokenize only)"]
    print(f"== {name} ({path.name}) ==")
    print(f"{'':<42} {'wall MB/s':>10} {'MB/CPU-s':>10} {'CPU-s/wall-s':>13}   vs gigatoken: wall, per CPU-s")
    for k, (wall, cpu) in rates.items():
        print(f"{k:<42} {wall:10.2f} {cpu:10.2f} {cpu_per_wall[k]:13.2f}   x{wall / ref[0]:6.2f}  x{cpu / ref[1]:6.2f}")
    one, two = rates["midmix prepare --threads 1"], rates["midmix prepare (end to end)"]
    print(f"midmix prepare: x{two[0] / one[0]:.2f} the one-thread wall throughput on {os.cpu_count()} threads\n")


if __name__ == "__main__":
    main()
