"""Benchmark `midmix prepare` against the standard pipeline and tokenization against fast encoders.

Run: `make bench` (or `.venv/bin/python benchmarks/prepare_bench.py --mb 40`).

Everything runs side by side on the same JSONL, built from the shared corpora (code + prose) when
they are present, else from the bundled demo data. It prints MB/s (wall) and MB per CPU-second,
and ratios against the baseline: these machines are shared and noisy, so compare ratios.

1. End to end (JSONL → MDS): the LLM Foundry-style baseline (json.loads, HF `tokenizers`
   `encode_batch`, concatenate + EOS, cut to seq_len, `streaming.MDSWriter`) vs `midmix prepare`.
2. Tokenization alone, on in-memory texts: HF `encode_batch`, tiktoken (GPT-2, local files),
   fastokens (PyPI, `encode_batch_flat`), and midmix's encoder (`midmix.Tokenizer.encode_batch_flat`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import measure

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PYTHIA = ROOT / "tests" / "fixtures" / "pythia.json"
GPT2 = SHARED / "tokenizers" / "gpt2.json"
# GPT-2's pre-tokenization pattern, as tiktoken's own `gpt2` encoding defines it.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""



def build_corpus(path: Path, mb: float) -> list[str]:
    """Interleave code and prose documents up to `mb` MB of text; write them as JSONL."""
    if SHARED.exists():
        import pyarrow.parquet as pq

        sources = [pq.read_table(SHARED / "corpora" / f, columns=["text"]).column("text").to_pylist()
                   for f in ("starcoder_like.parquet", "c4_like.parquet")]
    else:
        sources = [[json.loads(line)["text"] for line in (ROOT / "demo" / "data" / "prose.jsonl").open()]]
    texts, size, i = [], 0, 0
    while size < mb * 1e6:
        src = sources[i % len(sources)]
        t = src[(i // len(sources)) % len(src)]
        texts.append(t)
        size += len(t.encode())
        i += 1
    with path.open("w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return texts


def baseline_prepare(jsonl: Path, out: Path, seq_len: int) -> None:
    import tokenizers
    from streaming import MDSWriter

    tok = tokenizers.Tokenizer.from_file(str(PYTHIA))
    eos = tok.token_to_id("<|endoftext|>")
    buf: list[int] = []
    with MDSWriter(out=str(out), columns={"tokens": f"ndarray:uint16:{seq_len}"}) as w:
        def flush(batch: list[str]) -> None:
            for enc in tok.encode_batch(batch, add_special_tokens=False):
                buf.extend(enc.ids)
                buf.append(eos)
            while len(buf) >= seq_len:
                w.write({"tokens": np.asarray(buf[:seq_len], dtype=np.uint16)})
                del buf[:seq_len]

        batch: list[str] = []
        with jsonl.open() as f:
            for line in f:
                batch.append(json.loads(line)["text"])
                if len(batch) == 1000:
                    flush(batch)
                    batch = []
        flush(batch)


def row(name: str, mb: float, wall: float, cpu: float, base: tuple[float, float] | None) -> str:
    r = f"{name:<42} {mb / wall:9.2f} MB/s {mb / cpu:9.2f} MB/CPU-s"
    if base:
        r += f"   x{(mb / wall) / base[0]:7.1f} wall  x{(mb / cpu) / base[1]:7.1f} per CPU-s"
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=60.0, help="MB of text to use [60]")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="midmix-bench-"))
    os.environ["TMPDIR"] = str(work)
    try:
        jsonl = work / "corpus.jsonl"
        texts = build_corpus(jsonl, args.mb)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        print(f"corpus: {len(texts):,} documents, {mb:.1f} MB of text ({jsonl.stat().st_size / 1e6:.1f} MB JSONL), "
              f"{os.cpu_count()} cores\n")

        print("== end to end: JSONL → packed MDS (Pythia tokenizer) ==")
        base = None
        if not args.skip_baseline:
            wall, cpu = measure(lambda: baseline_prepare(jsonl, work / "baseline", args.seq_len))
            base = (mb / wall, mb / cpu)
            print(row("baseline (json + HF encode_batch + MDSWriter)", mb, wall, cpu, None))
        command = [str(Path(sys.executable).parent / "midmix"), "prepare", "bench", str(jsonl), "--tokenizer",
                  str(PYTHIA), "--seq-len", str(args.seq_len), "--out", str(work / "midmix"), "--data-root",
                  str(work / "root"), "--quiet"]
        wall, cpu = measure(lambda: subprocess.run(command, check=True))
        print(row("midmix prepare", mb, wall, cpu, base))

        print("\n== tokenization alone (in-memory texts) ==")
        import midmix
        import tokenizers

        for name, path in (("pythia", PYTHIA), ("gpt2", GPT2)):
            if not path.exists():
                continue
            hf = tokenizers.Tokenizer.from_file(str(path))
            wall, cpu = measure(lambda hf=hf: hf.encode_batch(texts, add_special_tokens=False))
            hf_rate = (mb / wall, mb / cpu)
            print(row(f"[{name}] HF tokenizers encode_batch", mb, wall, cpu, None))
            if name == "gpt2":
                try:
                    import tiktoken
                    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

                    ranks = data_gym_to_mergeable_bpe_ranks(str(SHARED / "tokenizers" / "gpt2" / "vocab.bpe"),
                                                            str(SHARED / "tokenizers" / "gpt2" / "encoder.json"))
                    enc = tiktoken.Encoding("gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                            special_tokens={"<|endoftext|>": 50256})
                    threads = os.cpu_count() or 1
                    wall, cpu = measure(lambda enc=enc, n=threads: enc.encode_ordinary_batch(texts, num_threads=n))
                    print(row(f"[{name}] tiktoken encode_ordinary_batch", mb, wall, cpu, hf_rate))
                except ImportError:
                    print(f"[{name}] tiktoken: not installed")
            try:
                import fastokens

                ft = fastokens.Tokenizer.from_file(str(path))
                wall, cpu = measure(lambda ft=ft: ft.encode_batch_flat(texts, add_special_tokens=False))
                print(row(f"[{name}] fastokens (PyPI) encode_batch_flat", mb, wall, cpu, hf_rate))
            except (ImportError, AttributeError) as e:
                print(f"[{name}] fastokens: unavailable ({e})")
            ours = midmix.Tokenizer(path)
            wall, cpu = measure(lambda ours=ours: ours.encode_batch_flat(texts))
            print(row(f"[{name}] midmix Tokenizer.encode_batch_flat ({ours.backend})", mb, wall, cpu, hf_rate))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
