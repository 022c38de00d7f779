"""The experiment's outputs: the paper's Table 2/3 shape, proximity advantage against gain, and the
timing × weight ablation — printed, and saved as Markdown, CSV, JSON and PNG under OUT/results/.

Per (model, target, seed) the learning rate with the lowest SFT validation loss is kept, as the paper
did; its validation loss and its held-out general loss after SFT are then averaged over seeds.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from midmix.errors import ConfigError
from midmix.experiment.grid import Variant, ablation_variants, all_variants, sft_jobs, table_models
from midmix.experiment.layout import Layout
from midmix.manifest import MixManifest, read_manifest
from midmix.plotting import pyplot
from midmix.proximity import proximity, proximity_advantage


def sft_results(lay: Layout) -> list[dict[str, Any]]:
    """One row per (model, target, seed): the best learning rate's final losses."""
    rows: list[dict[str, Any]] = []
    for model, target in sft_jobs(lay.g):
        for seed in lay.g.sft.seeds:
            best: dict[str, Any] | None = None
            for lr in lay.g.sft.lrs:
                summary = json.loads((lay.sft_dir(model, target, seed, lr) / "summary.json").read_text())
                final = summary["final"]
                row = {
                    "model": model,
                    "target": target,
                    "seed": seed,
                    "lr": lr,
                    "val_loss": final["domain/loss"],
                    "general_loss": final["forgetting/loss"],
                }
                if best is None or row["val_loss"] < best["val_loss"]:
                    best = row
            assert best is not None  # a grid has at least one learning rate (grid.validate)
            rows.append(best)
    return rows


def averaged(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for key in dict.fromkeys((r["model"], r["target"]) for r in rows):
        group = [r for r in rows if (r["model"], r["target"]) == key]
        out[key] = {
            "val_loss": float(np.mean([r["val_loss"] for r in group])),
            "general_loss": float(np.mean([r["general_loss"] for r in group])),
            "val_std": float(np.std([r["val_loss"] for r in group])),
            "seeds": len(group),
        }
    return out


def pearson(x: list[float], y: list[float]) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _cell(value: float, delta: float | None) -> str:
    return f"{value:.4f}" if delta is None else f"{value:.4f} ({delta:+.4f})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_all(lay: Layout, stats: dict[str, Any]) -> dict[str, Any]:
    g = lay.g
    res = lay.out / "results"
    res.mkdir(parents=True, exist_ok=True)
    rows = sft_results(lay)
    avg = averaged(rows)
    targets = list(g.sft.targets)
    models = table_models(g)

    # Table 2/3: SFT validation loss and general loss after SFT, Δ vs the base.
    def table(metric: str) -> list[list[str]]:
        out = []
        for m in models:
            cells = [m]
            for t in targets:
                base, here = avg[("base", t)][metric], avg[(m, t)][metric]
                cells.append(_cell(here, None if m == "base" else here - base))
            out.append(cells)
        return out

    header = ["model"] + targets
    val_md, gen_md = markdown_table(header, table("val_loss")), markdown_table(header, table("general_loss"))

    # Proximity advantage of each mix toward each target against its gain (base − variant SFT val loss).
    first_start = g.starts[0]
    pa_rows: list[dict[str, Any]] = []
    for m, spec in g.mixes.items():
        mixed = stats["base"].mix(stats[m], spec.weight)
        name = Variant(m, spec.weight, first_start).name
        for t in targets:
            target = stats[f"target:{t}"]
            pa_rows.append(
                {
                    "mix": m,
                    "weight": spec.weight,
                    "target": t,
                    "pa": proximity_advantage(mixed, target, stats["base"]),
                    "combined": proximity(mixed, target)["combined"],
                    "gain": avg[("base", t)]["val_loss"] - avg[(name, t)]["val_loss"],
                }
            )
    r = pearson([x["pa"] for x in pa_rows], [x["gain"] for x in pa_rows])
    pa_md = markdown_table(
        ["mix", "target", "PA", "SFT gain (base − mix val loss)"],
        [[x["mix"], x["target"], f"{x['pa']:+.5f}", f"{x['gain']:+.4f}"] for x in pa_rows],
    )
    pa_md += f"\n\nPearson r(PA, gain) = {r:.3f} over {len(pa_rows)} (mix, target) pairs"

    # Timing × weight ablation: the gain of each cell on the ablation's target.
    ablation = None
    if g.ablation is not None:
        a = g.ablation
        cells = {
            (v.start, v.weight): avg[("base", a.target)]["val_loss"] - avg[(v.name, a.target)]["val_loss"]
            for v in ablation_variants(g)
        }
        grid = np.array([[cells[(s, w)] for w in a.weights] for s in a.starts])
        ablation = {"mix": a.mix, "target": a.target, "starts": a.starts, "weights": a.weights, "gain": grid.tolist()}
        abl_rows = [[f"{s:g}"] + [f"{x:+.4f}" for x in row] for s, row in zip(a.starts, grid, strict=True)]
        abl_md = markdown_table(["start \\ weight"] + [f"{w:g}" for w in a.weights], abl_rows)
        _heatmap(
            grid,
            a.starts,
            a.weights,
            res / "ablation.png",
            f"{a.mix}: SFT gain on {a.target} (base − variant val loss)",
        )
        with open(res / "ablation.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["start", "weight", "gain"])
            for (s, wt), x in cells.items():
                writer.writerow([s, wt, x])

    # Passes over each source, from the mixes' own manifests: repetition is a grid setting, never silent.
    pass_rows: list[dict[str, Any]] = []
    for v in [None, *all_variants(g)]:
        mix = read_manifest(lay.mix_dir(v))
        assert isinstance(mix, MixManifest)
        pass_rows += [
            {"mix": lay.mix_dir(v).name, "source": k, "samples": mix.samples_per_source[k], "passes": round(p, 4)}
            for k, p in mix.passes.items()
        ]
    repeated = [r for r in pass_rows if r["passes"] > 1]
    pass_md = (
        markdown_table(
            ["mix", "source", "samples", "passes"],
            [[r["mix"], r["source"], f"{r['samples']:,}", f"{r['passes']:.2f}"] for r in repeated],
        )
        if repeated
        else "No source was read more than once."
    )
    with open(res / "passes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mix", "source", "samples", "passes"])
        w.writeheader()
        w.writerows(pass_rows)

    with open(res / "sft.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "target", "seed", "lr", "val_loss", "general_loss"])
        w.writeheader()
        w.writerows(rows)
    with open(res / "proximity.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mix", "weight", "target", "pa", "combined", "gain"])
        w.writeheader()
        w.writerows(pa_rows)

    doc = [
        f"# {g.name}: {g.arch}, {g.steps} steps × {g.global_batch} × {g.seq_len} tokens of pretraining",
        "",
        "## SFT validation loss (Δ vs base), best learning rate per seed, mean over seeds",
        "",
        val_md,
        "",
        "## Held-out general loss after SFT (Δ vs base)",
        "",
        gen_md,
        "",
        "## Proximity advantage vs SFT gain",
        "",
        pa_md,
    ]
    if ablation is not None:
        doc += ["", f"## Timing × weight ablation: {ablation['mix']} → {ablation['target']} SFT gain", "", abl_md]
    doc += ["", "## Sources read more than once (all in passes.csv)", "", pass_md]
    text = "\n".join(doc) + "\n"
    (res / "tables.md").write_text(text)
    results = {
        "sft": rows,
        "mean": {f"{m}|{t}": v for (m, t), v in avg.items()},
        "proximity": pa_rows,
        "pearson_r": r,
        "ablation": ablation,
        "passes": pass_rows,
    }
    (res / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    return results


def _heatmap(grid: np.ndarray, starts: list[float], weights: list[float], out: Path, title: str) -> None:
    try:
        plt = pyplot("the ablation heatmap")
    except ConfigError:
        return  # the CSV and Markdown carry the same numbers
    fig, ax = plt.subplots(figsize=(1.4 * len(weights) + 2, 1.1 * len(starts) + 1.5))
    lim = float(np.abs(grid).max()) or 1.0
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(weights)), [f"{w:.0%}" for w in weights])
    ax.set_yticks(range(len(starts)), [f"{s:.0%}" for s in starts])
    ax.set_xlabel("weight of the mix")
    ax.set_ylabel("start (fraction of pretraining)")
    for i in range(len(starts)):
        for j in range(len(weights)):
            ax.text(j, i, f"{grid[i, j]:+.3f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="gain (nats/token)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
