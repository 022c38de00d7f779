"""`midmix report`: training runs side by side — loss curves in one PNG and a table of final values.

Reads only files a run directory holds (`metrics.jsonl`, `summary.json`), so it needs neither torch
nor Composer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from midmix.errors import ConfigError
from midmix.plotting import pyplot

# Panels of the figure: (title, metric in metrics.jsonl).
PANELS = [
    ("train loss", "loss/train/total"),
    ("in-domain loss", "domain/loss"),
    ("held-out general loss (forgetting)", "forgetting/loss"),
]
COLUMNS = ["run", "steps", "tokens", "train loss", "domain loss", "Δ domain", "general loss", "Δ general"]


@dataclass
class Run:
    name: str
    path: Path
    series: dict[str, list[tuple[int, int, float]]]
    summary: dict

    def last(self, metric: str) -> float:
        values = self.series.get(metric)
        return values[-1][2] if values else math.nan


def read_metrics(path: Path) -> dict[str, list[tuple[int, int, float]]]:
    """metrics.jsonl → {metric: [(step, tokens, value)]}, one value per step: after a resume a step
    can appear twice, and the later line wins."""
    series: dict[str, dict[int, tuple[int, float]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{number}: not JSON ({e})") from e
        step, tokens = int(record.get("step") or 0), int(record.get("tokens") or 0)
        for key, value in record.items():
            if key not in ("step", "samples", "tokens"):
                series.setdefault(key, {})[step] = (tokens, float(value))
    return {k: [(s, t, v) for s, (t, v) in sorted(d.items())] for k, d in series.items()}


def load_run(path: Path) -> Run:
    metrics = path / "metrics.jsonl"
    if not metrics.exists():
        raise ConfigError(f"{path}: no metrics.jsonl (not a midmix training run directory)")
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return Run(name=summary.get("run_name", path.name), path=path, series=read_metrics(metrics), summary=summary)


def table(runs: list[Run]) -> list[list[str]]:
    def fmt(x: float) -> str:
        return "—" if math.isnan(x) else f"{x:.4f}"

    rows = []
    for r in runs:
        steps = r.summary.get("steps") or max((v[-1][0] for v in r.series.values()), default=0)
        tokens = r.summary.get("tokens") or max((v[-1][1] for v in r.series.values()), default=0)
        status = "" if r.summary.get("completed") else " (running or stopped)"
        rows.append(
            [
                r.name + status,
                str(steps),
                f"{tokens:,}",
                fmt(r.last("loss/train/total")),
                fmt(r.last("domain/loss")),
                fmt(r.last("domain/delta")),
                fmt(r.last("forgetting/loss")),
                fmt(r.last("forgetting/delta")),
            ]
        )
    return rows


def render(rows: list[list[str]], header: list[str] = COLUMNS) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def plot(runs: list[Run], out: Path) -> None:
    plt = pyplot("the loss-curve PNG")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4), squeeze=False)
    for ax, (title, metric) in zip(axes[0], PANELS, strict=True):
        for i, r in enumerate(runs):
            points = r.series.get(metric, [])
            if points:  # one colour per run across the panels
                ax.plot(
                    [t for _, t, _ in points],
                    [v for _, _, v in points],
                    label=r.name,
                    color=f"C{i % 10}",
                    marker="o" if len(points) < 30 else None,
                    markersize=3,
                )
        ax.set_title(title)
        ax.set_xlabel("tokens trained")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
