"""Composer checkpoints on disk, in both of their forms, and which one a run can load.

`fsdp.state_dict_type: full` (and every run without FSDP) saves one file per checkpoint,
`checkpoints/ep{E}-ba{B}-rank0.pt`; `sharded` saves a torch.distributed.checkpoint (DCP) directory,
`checkpoints/ep{E}-ba{B}/` (`.metadata` and one `__{rank}_0.distcp` per rank). `latest-rank0.pt` links
to the newest of either. Both load on any world size; Composer loads a full checkpoint only into a
run that saves full ones, and a sharded one only into a sharded run, so a resume or a branch must
keep the form of the checkpoint it starts from. `model.init_from` reads the weights of either form.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed import checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from midmix.errors import ConfigError
from midmix.train.config import TrainConfig

LATEST = "latest-rank0.pt"


def is_sharded(path: Path) -> bool:
    """Whether `path` (a checkpoint file, DCP directory, or a link to either) is a sharded checkpoint."""
    return path.is_dir() and (path / ".metadata").is_file()


def saves(cfg: TrainConfig) -> str:
    """The form of the checkpoints this recipe saves and can load: full or sharded."""
    return cfg.fsdp.state_dict_type if cfg.fsdp is not None else "full"


def _form(path: Path) -> str:
    return "sharded" if is_sharded(path) else "full"


def _step_of(path: Path) -> int | None:
    """B of `ep{E}-ba{B}-rank0.pt` or `ep{E}-ba{B}`, else None."""
    name = path.name.removesuffix("-rank0.pt")
    _, sep, step = name.partition("-ba")
    return int(step) if sep and name.startswith("ep") and step.isdigit() else None


def saved_checkpoints(folder: Path) -> dict[int, Path]:
    """Every checkpoint in `folder` by step, of either form (the latest link left out)."""
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("ep*-ba*")):
        step = _step_of(path)
        if step is not None and (is_sharded(path) or (path.is_file() and path.name.endswith("-rank0.pt"))):
            found[step] = path
    return found


def _refuse_form(key: str, what: str, path: Path, cfg: TrainConfig) -> None:
    form, ours = _form(path), saves(cfg)
    if form == ours:
        return
    if form == "sharded":
        fix = "set fsdp.state_dict_type: sharded (a sharded checkpoint loads into a sharded run on any world size)"
    else:
        fix = "set fsdp.state_dict_type: full, or drop fsdp (a full checkpoint loads on any world size)"
    raise ConfigError(f"{key}: {what} {path} is a {form} checkpoint, and this recipe saves and loads {ours} ones; "
                      f"{fix}")


def branch_checkpoint(cfg: TrainConfig) -> Path:
    """The base run's checkpoint at branch.step, in the form this recipe loads."""
    assert cfg.branch is not None
    folder = Path(cfg.branch.run) / "checkpoints"
    found = saved_checkpoints(folder)
    if cfg.branch.step not in found:
        steps = ", ".join(map(str, sorted(found))) or "none"
        raise ConfigError(f"branch: no checkpoint at step {cfg.branch.step} in {folder}; saved steps: {steps} "
                          "(add the step to the base's checkpoint.steps)")
    path = found[cfg.branch.step]
    _refuse_form("branch", f"the base's checkpoint at step {cfg.branch.step},", path, cfg)
    return path


def check_resume(cfg: TrainConfig, latest: Path) -> None:
    """A run resumed from its own latest checkpoint must still save that form."""
    _refuse_form("fsdp.state_dict_type", "the run's latest checkpoint,", latest.resolve(), cfg)


def load_sharded_weights(model: torch.nn.Module, path: Path) -> None:
    """The model weights (`state.model`) of a DCP checkpoint, into an unsharded model, on every rank.
    Only the model's tensors are read (not the optimizer's), whatever world size saved them."""
    weights = model.state_dict()
    try:
        # Composer saves {"state": {"model": …, "optimizers": …}, "rng": …}; DCP reads the keys asked for.
        dcp.load({"state": {"model": weights}}, checkpoint_id=str(path))
    except (CheckpointException, RuntimeError, ValueError) as e:  # a missing key or a shape that differs
        raise ConfigError(f"model.init_from: {path} does not match model.arch ({str(e).strip()[:300]})") from e
    model.load_state_dict(weights)
