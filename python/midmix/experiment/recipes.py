"""The training recipe of each run of a grid (stages 3–5): what the run trains on, from where, and how.

A recipe is also the run's cache key (`kinds.py` hashes it), so it holds everything that changes the
run's weights and nothing that does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from midmix.experiment.grid import Variant, all_variants, branch_step
from midmix.experiment.layout import Layout
from midmix.registry import Dataset


def _recipe(lay: Layout, name: str, run_dir: Path) -> dict[str, Any]:
    g = lay.g
    return {
        "run_name": name,
        "run_dir": str(run_dir),
        "seed": g.seed,
        "device": g.device,
        "model": {"arch": g.arch},
        "loggers": {"progress_bar": False, "console": False},
        "data": {
            "eval": {"general": {"path": str(lay.data / "general_val"), "max_samples": g.eval_samples}},
            "eval_batch_size": 16,
        },
    }


def pretrain_recipe(lay: Layout, v: Variant | None) -> dict[str, Any]:
    """The base's pretraining run (`v` None) or a variant's midtraining branch off it."""
    g, p = lay.g, lay.g.pretrain
    name = "base" if v is None else v.name
    r = _recipe(lay, name, lay.runs / name)
    every = f"{max(g.steps // 4, 1)}ba"
    r.update(
        {
            "duration": f"{g.steps}ba",
            "optimizer": {"lr": p.lr, "weight_decay": p.weight_decay},
            "schedule": {"name": p.schedule, "warmup": p.warmup, "min_lr": p.min_lr},
            "callbacks": {"forgetting": {"eval": "general", "interval": every}, "mixture": {"interval": every}},
        }
    )
    r["data"].update(
        {
            "train": {"path": str(lay.mix_dir(v))},
            "global_batch_size": g.global_batch,
            "micro_batch_size": g.micro_batch,
        }
    )
    if v is None:  # full checkpoints at every branch point; the rest of the run is cheap to redo
        steps = sorted({branch_step(g, x.start) for x in all_variants(g)})
        r["checkpoint"] = {"interval": None, "steps": steps}
    else:  # the variants' SFT needs only their final weights
        r["branch"] = {"run": str(lay.runs / "base"), "step": branch_step(g, v.start)}
        r["checkpoint"] = {"interval": None, "weights_only": True}
    return r


def sft_recipe(lay: Layout, model: str, target: str, seed: int, lr: float) -> dict[str, Any]:
    """One SFT run of `model` on `target` (its prepared examples must exist: their count places the
    validation split)."""
    g, s, t = lay.g, lay.g.sft, lay.g.sft.targets[target]
    data = lay.data / f"sft-{target}"
    total = Dataset.open(data).num_samples  # check_data saw train + val examples fit
    val, train = t.val_examples, t.train_examples
    r = _recipe(lay, f"sft-{target}-{model}", lay.sft_dir(model, target, seed, lr))
    r.update(
        {
            "seed": seed,
            "duration": f"{s.epochs}ep",
            "model": {"arch": g.arch, "init_from": str(lay.runs / model)},
            "optimizer": {"lr": lr},
            "schedule": {"name": "cosine", "warmup": 0.1, "min_lr": min(1e-6, lr)},
            "callbacks": {
                "domain": {"eval": "domain", "interval": "1000000ba"},
                "forgetting": {"eval": "general", "interval": "1000000ba"},
            },
            "checkpoint": {"interval": None, "weights_only": True} if s.save_weights else {"enabled": False},
        }
    )
    r["data"].update(
        {
            "train": {"path": str(data), "kind": "sft", "select": f"0:{train}", "mask_prompt": t.mask_prompt},
            "global_batch_size": s.global_batch,
        }
    )
    r["data"]["eval"]["domain"] = {
        "path": str(data),
        "kind": "sft",
        "select": f"{total - val}:",
        "max_samples": val,
        "mask_prompt": t.mask_prompt,
    }
    if s.general_loss == "documents":
        r["data"]["eval"]["general"] = {
            "path": str(lay.data / "general_val-docs"),
            "kind": "sft",
            "max_samples": g.eval_samples,
        }
    return r
