"""Text descriptions of datasets and mixes: `prepare`'s and `build-mix`'s final tables, `midmix inspect`."""

from __future__ import annotations

from typing import Any

from midmix.manifest import MixManifest, PreparedManifest
from midmix.registry import Dataset


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def prepared_lines(m: PreparedManifest) -> list[str]:
    c, tok = m.counts, m.tokenizer
    lines = [
        f"name          {m.name}  ({m.mode}, seq_len {m.seq_len}, {m.dtype})",
        f"tokenizer     {tok.path}  [{tok.encoder}, vocab {tok.vocab_size}, sha256 {tok.sha256[:12]}…]",
        f"eos / bos     {m.eos_id} / {m.bos_id}",
        f"inputs        {len(m.inputs)} file(s), {human_bytes(c.input_bytes)}; text {human_bytes(c.text_bytes)}",
        f"documents     {c.documents:,}  ({c.document_tokens:,} tokens"
        + (", BOS/EOS included)" if m.mode == "pretrain" else " of prompts and responses, before BOS/EOS)"),
        f"samples       {c.samples:,}  ({c.tokens:,} tokens, {human_bytes(c.output_bytes)} on disk)",
    ]
    if m.mode == "pretrain":
        lines.append(f"dropped tail  {c.dropped_tail_tokens:,} tokens (final partial sample)")
    else:
        lines.append(
            f"truncated     {c.truncated_samples:,} samples ({c.truncated_tokens:,} tokens); "
            f"label tokens {c.label_tokens:,}"
        )
    if c.skipped:
        lines.append("skipped       " + ", ".join(f"{k} {v:,}" for k, v in sorted(c.skipped.items())))
    else:
        lines.append("skipped       none")
    if m.task:
        t = m.task
        lines.append(f"task          {t.index} of {t.count} (tail of {len(t.tail)} tokens kept for merge)")
    if m.run.elapsed_s:
        rate = f", {m.run.text_mb_per_s:.1f} MB/s of text" if m.run.text_mb_per_s else ""  # merge tokenizes none
        threads = f", {m.run.threads} thread{'s' if m.run.threads != 1 else ''}" if m.run.threads else ""
        lines.append(f"time          {m.run.elapsed_s:.2f} s{rate}{threads}")
    return lines


def index_lines(d: Dataset) -> list[str]:
    """A dataset's MDS `index.json`: shards, samples, stored size, columns and writer options; for an
    index mix, its index files and the sources it reads."""
    if (mix := d.index_mix) is not None and mix.index is not None:
        stored = mix.index.source.bytes + mix.index.sample.bytes
        lines = [
            f"form          index: {mix.index.positions:,} positions in {human_bytes(stored)} "
            f"(`midmix export` writes MDS shards)"
        ]
        lines += [f"source        {s.name:<16}{s.path}  ({s.samples:,} samples)" for s in mix.source_info]
        return lines
    shards, samples = d.shards, d.num_samples
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


def mix_lines(m: MixManifest) -> list[str]:
    """Plan vs realized shares per phase and source, and the schedule as a text chart."""
    lines = [
        f"mix           {len(m.sources)} sources, {m.total_samples:,} samples = {m.total_tokens:,} tokens "
        f"(seq_len {m.seq_len}, seed {m.seed}, global batch {m.global_batch or '-'})",
        f"exactness     max |count - target| over every prefix = {m.max_deviation:.4f}"
        + ("  (exact)" if m.max_deviation < 1 else "  (NOT within 1)"),
        "",
        f"{'phase':<7}{'samples':>22}  {'source':<16}{'plan':>8}{'realized':>10}  share",
    ]
    for p, ph in enumerate(m.phases, start=1):
        n = ph.end_sample - ph.start_sample
        span = f"{ph.start_sample:,}-{ph.end_sample:,}"
        for j, name in enumerate(m.sources):
            real = ph.samples[name] / n if n else 0.0
            plan = ph.planned_share[name]
            head = (f"{p}{' ramp' if ph.ramp else '':<6}" if j == 0 else "").ljust(7)
            lines.append(f"{head}{span if j == 0 else '':>22}  {name:<16}{plan:>8.4f}{real:>10.4f}  {_bar(real)}")
    if any(ph.ramp for ph in m.phases):
        lines.append("(a ramp phase's plan is its average share: its weights move linearly from the previous phase's)")
    lines.append("")
    lines.append("passes        " + ", ".join(f"{k} {v:.3f}" for k, v in m.passes.items()))
    if m.elapsed_s:
        lines.append(f"time          {m.elapsed_s:.2f} s")
    return lines


def manifest_lines(m: PreparedManifest | MixManifest) -> list[str]:
    return mix_lines(m) if isinstance(m, MixManifest) else prepared_lines(m)


def sample_origin(d: Dataset, n: int) -> str:
    """`(source NAME) ` for a sample of a mix, else nothing."""
    m = d.manifest
    if isinstance(m, MixManifest):
        return f"(source {m.sources[int(d.sample(n)['source'])]}) "
    return ""


def sample_lines(sample: dict[str, Any], tok: Any) -> list[str]:
    """A sample decoded as text: its tokens, or an SFT example's prompt and trained part."""
    if "tokens" in sample:
        return [tok.decode(sample["tokens"].tolist())]
    if "input_ids" in sample:
        ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
        masked = sum(1 for x in labels if x == -100)
        return [
            f"[prompt, {masked} masked tokens]",
            tok.decode(ids[:masked]),
            f"[trained, {len(ids) - masked} tokens]",
            tok.decode(ids[masked:]),
        ]
    return [repr(sample)]
