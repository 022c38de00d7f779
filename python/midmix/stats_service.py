"""`midmix stats` and `midmix proximity`: resolving sources, scoring them, and the tables, files and plots."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midmix import registry
from midmix.errors import ConfigError, MidmixError
from midmix.manifest import read_manifest
from midmix.plotting import pyplot
from midmix.proximity import UnigramStats, proximity
from midmix.tokenizer import Tokenizer, open_recorded_tokenizer

METRICS = [
    "combined",
    "vocab_jaccard",
    "overlap_ratio",
    "cosine",
    "jsd",
    "js_similarity",
    "kl_smoothed",
    "jsd_normalized",
]


def detect_fields(path: Path) -> list[str]:
    """`text` if the file has it, else `prompt` + `response` (SFT files), from its first record."""
    keys: list[str] = []
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    first = files[0] if files else path
    if first.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            keys = list(pq.read_schema(first).names)
        except ImportError:
            return ["text"]
    elif first.name.endswith((".jsonl", ".json", ".ndjson")):
        with first.open() as f:
            line = f.readline()
        try:
            keys = list(json.loads(line)) if line.strip() else []
        except json.JSONDecodeError:
            return ["text"]
    if "text" in keys or not keys:
        return ["text"]
    if "prompt" in keys and "response" in keys:
        return ["prompt", "response"]
    raise ConfigError(f"{first}: no 'text' (or 'prompt'+'response') field; pass --fields")


def load_source(
    spec: str,
    *,
    tokenizer: str | None,
    data_root: Path,
    fields: list[str] | None,
    max_docs: int | None,
    max_tokens_per_doc: int | None,
    seed: int,
) -> UnigramStats:
    """NAME=PATH (raw files, a prepared/mixed dataset, or saved stats .npz) or a registered NAME."""
    name, sep, path_text = spec.partition("=")
    path = Path(path_text) if sep else registry.lookup(name, data_root)
    if sep and not path.exists():
        raise ConfigError(f"{name}: {path} does not exist")
    if path.suffix == ".npz":
        stats = UnigramStats.load(path)
    elif path.is_dir() and registry.is_dataset(path):
        if max_docs or max_tokens_per_doc:
            raise ConfigError(f"{name}: --max-docs/--max-tokens-per-doc apply to raw files, not to dataset {path}")
        stats = UnigramStats.from_dataset(path, name)
    else:
        if not tokenizer:
            raise ConfigError(f"{name}: raw files need --tokenizer")
        stats = UnigramStats.from_files(
            [path],
            tokenizer,
            name,
            fields=fields or detect_fields(path),
            max_docs=max_docs,
            max_tokens_per_doc=max_tokens_per_doc,
            seed=seed,
        )
    stats.name = name
    return stats


@dataclass
class SourceLoader:
    """How `--target`/`--base`/`--candidates` specs are counted (the shared options of the command)."""

    tokenizer: str | None
    data_root: Path
    fields: list[str] | None = None
    max_docs: int | None = None
    max_tokens_per_doc: int | None = None
    seed: int = 0

    def __call__(self, spec: str) -> UnigramStats:
        return load_source(
            spec,
            tokenizer=self.tokenizer,
            data_root=self.data_root,
            fields=self.fields,
            max_docs=self.max_docs,
            max_tokens_per_doc=self.max_tokens_per_doc,
            seed=self.seed,
        )


def recorded_tokenizer(spec: str, root: Path) -> str | None:
    """The tokenizer a dataset spec's midmix.json names, when that file is still there and unchanged (for
    decoding)."""
    name, sep, path = spec.partition("=")
    try:
        manifest = read_manifest(registry.resolve(Path(path) if sep else name, root))
    except (OSError, MidmixError):
        return None
    tok = manifest.tokenizer if manifest else None
    if not tok or not Path(tok.path).exists():
        return None
    try:  # decoded only with the very file it was prepared with: other ids would show other text
        open_recorded_tokenizer(tok.path, tok.sha256, spec)
    except MidmixError:
        return None
    return tok.path


@dataclass
class Comparison:
    """What `midmix proximity` shows: lines to print, every number (for --json), and how to plot them."""

    lines: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)
    as_matrix: bool = False

    def plot(self, path: Path) -> None:
        if self.as_matrix:
            plot_heatmap(self.numbers["matrix"], path)
        else:
            plot_pa(self.numbers, path)


def compare(
    load: SourceLoader,
    *,
    targets: list[str],
    base: str | None,
    candidates: list[str],
    mixes: dict[str, float],
    as_matrix: bool,
) -> Comparison:
    """Score candidates (optionally as token-weighted mixes with the base) against targets: the PA
    table, or with `as_matrix` every pair among the named sources."""
    tgt = [load(t) for t in targets]
    cands = [load(c) for c in candidates]
    base_stats = load(base) if base else None
    unknown = set(mixes) - {c.name for c in cands}
    if unknown:
        raise ConfigError(f"--mix names {', '.join(sorted(unknown))}, which are not --candidates")
    if mixes and base_stats is None:
        raise ConfigError("--mix needs --base")
    scored = [base_stats.mix(c, mixes[c.name]) if base_stats and c.name in mixes else c for c in cands]
    numbers: dict[str, Any] = {"mixtures": mixes}
    if as_matrix:
        m = matrix(tgt + ([base_stats] if base_stats else []) + scored)
        numbers["matrix"] = m
        names = list(m)
        lines = [f"{'combined':<22}" + "".join(f"{n[:12]:>13}" for n in names)]
        lines += [f"{a[:22]:<22}" + "".join(f"{m[a][b]['combined']:>13.4f}" for b in names) for a in names]
        return Comparison(lines, numbers, as_matrix=True)
    if not tgt or base_stats is None or not scored:
        raise ConfigError("give --target, --base and --candidates (or --matrix)")
    lines, table = pa_table(tgt, base_stats, scored)
    numbers.update(table)
    return Comparison("\n".join(lines).lstrip("\n").split("\n"), numbers)


def _units(s: UnigramStats) -> str:
    """What `documents` counts: a dataset's samples, raw files' documents."""
    return "samples" if s.meta.get("kind") == "dataset" else "documents"


def summary_numbers(s: UnigramStats, top: int) -> dict[str, Any]:
    """What `stats --json` prints."""
    return {
        "source": s.name,
        "tokens": int(s.tokens),
        _units(s): int(s.documents),
        "distinct_ids": int(s.support.sum()),
        "entropy_nats": s.entropy(),
        "top": [{"id": int(i), "p": float(p)} for i, p in s.top(top)],
        **{k: v for k, v in s.meta.items() if k in ("excluded_ids", "kept_ids", "kind")},
    }


def summary_lines(s: UnigramStats, tokenizer: str | None, top: int) -> list[str]:
    lines = [
        f"source        {s.name}",
        f"tokens        {s.tokens:,} in {s.documents:,} {_units(s)}",
        f"distinct ids  {int(s.support.sum()):,}",
        f"entropy       {s.entropy():.4f} nats ({s.entropy() / 0.6931471805599453:.4f} bits)",
    ]
    if s.meta.get("excluded_ids"):
        lines.append(f"left out      ids {s.meta['excluded_ids']}: the EOS/BOS prepare inserted")
    if s.meta.get("kept_ids"):
        lines.append(
            f"counted       ids {s.meta['kept_ids']}: the EOS/BOS prepare inserted, counted too, since the "
            "documents' own text holds them"
        )
    tok = Tokenizer(tokenizer) if tokenizer else None
    lines.append(
        f"top {top} tokens"
        + ("" if tok else " (ids only: no unchanged tokenizer recorded to decode them with; pass --tokenizer)")
    )
    for i, p in s.top(top):
        text = repr(tok.decode([i])) if tok else ""
        lines.append(f"  {i:>7} {p:9.5f}  {text}")
    return lines


def pa_table(targets: list[UnigramStats], base: UnigramStats, candidates: list[UnigramStats]) -> tuple[list[str], dict]:
    """Lines to print and the numbers for --json: every metric per (target, source), with PA and
    KL(target‖source)."""
    out: dict = {"base": base.name, "targets": {}}
    lines = []
    for t in targets:
        base_combined = proximity(base, t)["combined"]
        rows = {}
        for s in [base, *candidates]:
            r = proximity(s, t)
            rows[s.name] = {
                **r,
                "pa": r["combined"] - base_combined,
                "kl_target_to_source": proximity(t, s)["kl_smoothed"],
            }
        out["targets"][t.name] = rows
        lines.append(f"\ntarget {t.name}")
        lines.append(
            f"  {'source':<28}{'PA':>9}{'combined':>10}{'jaccard':>9}{'cosine':>9}{'JSD':>8}{'js_sim':>8}{'KL(t|s)':>9}"
        )
        for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["pa"]):
            lines.append(
                f"  {name:<28}{r['pa']:>+9.4f}{r['combined']:>10.4f}{r['vocab_jaccard']:>9.4f}"
                f"{r['cosine']:>9.4f}{r['jsd']:>8.4f}{r['js_similarity']:>8.4f}"
                f"{r['kl_target_to_source']:>9.4f}"
            )
    return lines, out


def matrix(sources: list[UnigramStats]) -> dict[str, dict[str, dict[str, float]]]:
    """All ordered pairs; the diagonal is 1.0 for the combined score, as in the paper's figure."""
    m: dict[str, dict[str, dict[str, float]]] = {}
    for a in sources:
        m[a.name] = {}
        for b in sources:
            m[a.name][b.name] = proximity(a, b) if a is not b else {**proximity(a, b), "combined": 1.0}
    return m


def write_matrix_csv(m: dict, path: Path) -> None:
    names = list(m)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "other", *METRICS])
        for a in names:
            for b in names:
                w.writerow([a, b, *[f"{m[a][b][k]:.6f}" for k in METRICS]])


def plot_heatmap(m: dict, path: Path, metric: str = "combined") -> None:
    import numpy as np

    plt = pyplot("--plot")

    names = list(m)
    grid = np.array([[m[a][b][metric] for b in names] for a in names])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 1 + 0.8 * len(names)))
    im = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{grid[i, j]:.3f}",
                ha="center",
                va="center",
                color="white" if grid[i, j] < grid.mean() else "black",
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, label=f"{metric} proximity")
    ax.set_title(f"Token-unigram proximity ({metric})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pa(numbers: dict, path: Path) -> None:
    import numpy as np

    plt = pyplot("--plot")

    targets = list(numbers["targets"])
    cands = [c for c in numbers["targets"][targets[0]] if c != numbers["base"]]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(targets), 3.5))
    width = 0.8 / max(len(cands), 1)
    for k, c in enumerate(cands):
        vals = [numbers["targets"][t][c]["pa"] for t in targets]
        ax.bar(np.arange(len(targets)) + k * width, vals, width, label=c)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(targets)) + width * (len(cands) - 1) / 2, targets)
    ax.set_ylabel(f"proximity advantage vs {numbers['base']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
