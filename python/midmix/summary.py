"""Human-readable summaries of prepared datasets (`prepare`'s final table, `midmix inspect`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def report_lines(r: dict[str, Any]) -> list[str]:
    c = r["counts"]
    tok = r["tokenizer"]
    lines = [
        f"name          {r['name']}  ({r['mode']}, seq_len {r['seq_len']}, {r['dtype']})",
        f"tokenizer     {tok['path']}  [{tok['encoder']}, vocab {tok['vocab_size']}, sha256 {tok['sha256'][:12]}…]",
        f"eos / bos     {r['eos_id']} / {r['bos_id']}",
        f"inputs        {len(r['inputs'])} file(s), {human_bytes(c['input_bytes'])}; "
        f"text {human_bytes(c['text_bytes'])}",
        f"documents     {c['documents']:,}  ({c['document_tokens']:,} tokens incl. special)",
        f"samples       {c['samples']:,}  ({c['tokens']:,} tokens, {human_bytes(c['output_bytes'])} on disk)",
    ]
    if r["mode"] == "pretrain":
        lines.append(f"dropped tail  {c['dropped_tail_tokens']:,} tokens (final partial sample)")
    else:
        lines.append(
            f"truncated     {c['truncated_samples']:,} samples ({c['truncated_tokens']:,} tokens); "
            f"label tokens {c['label_tokens']:,}"
        )
    skipped = c.get("skipped") or {}
    if skipped:
        lines.append("skipped       " + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items())))
    else:
        lines.append("skipped       none")
    if r.get("task"):
        t = r["task"]
        lines.append(f"task          {t['index']} of {t['count']} (tail of {len(t['tail'])} tokens kept for merge)")
    run = r.get("run") or {}
    if run.get("elapsed_s"):
        lines.append(
            f"time          {run['elapsed_s']:.2f} s, {run.get('text_mb_per_s', 0):.1f} MB/s of text, "
            f"{run.get('threads')} threads"
        )
    return lines


def read_index(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "index.json").read_text())


def num_samples(index: dict[str, Any]) -> int:
    """Samples in an MDS dataset, from its index.json (any sample layout, fixed-size or not)."""
    return sum(int(s["samples"]) for s in index["shards"])


def index_lines(index: dict[str, Any]) -> list[str]:
    shards = index["shards"]
    samples = num_samples(index)
    stored = sum((s["zip_data"] or s["raw_data"])["bytes"] for s in shards)
    lines = [f"shards        {len(shards)}  ({samples:,} samples, {human_bytes(stored)} stored)"]
    if shards:
        s0 = shards[0]
        cols = ", ".join(f"{n}:{e}" for n, e in zip(s0["column_names"], s0["column_encodings"], strict=True))
        lines.append(f"columns       {cols}")
        lines.append(
            f"compression   {s0['compression'] or 'none'}; hashes {', '.join(s0['hashes']) or 'none'}; "
            f"size_limit {s0['size_limit']}"
        )
    return lines


def _bar(share: float, width: int = 24) -> str:
    filled = int(round(share * width))
    return "█" * filled + "·" * (width - filled)


def mix_lines(r: dict[str, Any]) -> list[str]:
    """Plan vs realized shares per phase and source, and the schedule as a text chart."""
    total = r["total_samples"]
    lines = [
        f"mix           {len(r['sources'])} sources, {total:,} samples = {r['total_tokens']:,} tokens "
        f"(seq_len {r['seq_len']}, seed {r['seed']}, global batch {r['global_batch'] or '-'})",
        f"exactness     max |count - target| over every prefix = {r['max_deviation']:.4f}"
        + ("  (exact)" if r["max_deviation"] < 1 else "  (NOT within 1)"),
        "",
        f"{'phase':<7}{'samples':>22}  {'source':<16}{'plan':>8}{'realized':>10}  share",
    ]
    for p, ph in enumerate(r["phases"], start=1):
        n = ph["end_sample"] - ph["start_sample"]
        span = f"{ph['start_sample']:,}-{ph['end_sample']:,}"
        for j, name in enumerate(r["sources"]):
            real = ph["samples"][name] / n if n else 0.0
            plan = ph["planned_share"][name]
            head = (f"{p}{' ramp' if ph['ramp'] else '':<6}" if j == 0 else "").ljust(7)
            lines.append(f"{head}{span if j == 0 else '':>22}  {name:<16}{plan:>8.4f}{real:>10.4f}  {_bar(real)}")
    lines.append("")
    lines.append("passes        " + ", ".join(f"{k} {v:.3f}" for k, v in r["passes"].items()))
    if r.get("elapsed_s"):
        lines.append(f"time          {r['elapsed_s']:.2f} s")
    return lines
