"""Composer checkpoints on disk, in both of their forms, and which one a run can load.

`fsdp.state_dict_type: full` (and every run without FSDP) saves one file per checkpoint,
`checkpoints/ep{E}-ba{B}-rank0.pt`; `sharded` saves a torch.distributed.checkpoint (DCP) directory,
`checkpoints/ep{E}-ba{B}/` (`.metadata` and one `__{rank}_0.distcp` per rank). `latest-rank0.pt` links
to the newest of either. Both load on any world size; Composer loads a full checkpoint only into a
run that saves full ones, and a sharded one only into a sharded run, so a resume or a branch must
keep the form of the checkpoint it starts from. `model.init_from` reads the weights of either form.
"""

from __future__ import annotations

import os
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


def step_of(path: Path) -> int | None:
    """B of `ep{E}-ba{B}-rank0.pt` or `ep{E}-ba{B}`, else None."""
    name = path.name.removesuffix("-rank0.pt")
    _, sep, step = name.partition("-ba")
    return int(step) if sep and name.startswith("ep") and step.isdigit() else None


def saved_checkpoints(folder: Path) -> dict[int, Path]:
    """Every checkpoint in `folder` by step, of either form (the latest link left out)."""
    return {step: path for step, path in _candidates(folder).items() if is_sharded(path) or path.is_file()}


def _refuse_form(key: str, what: str, path: Path, cfg: TrainConfig) -> None:
    form, ours = _form(path), saves(cfg)
    if form == ours:
        return
    if form == "sharded":
        fix = "set fsdp.state_dict_type: sharded (a sharded checkpoint loads into a sharded run on any world size)"
    else:
        fix = "set fsdp.state_dict_type: full, or drop fsdp (a full checkpoint loads on any world size)"
    raise ConfigError(
        f"{key}: {what} {path} is a {form} checkpoint, and this recipe saves and loads {ours} ones; {fix}"
    )


def branch_checkpoint(cfg: TrainConfig) -> Path:
    """The base run's checkpoint at branch.step, in the form this recipe loads."""
    assert cfg.branch is not None
    folder = Path(cfg.branch.run) / "checkpoints"
    found = saved_checkpoints(folder)
    if cfg.branch.step not in found:
        steps = ", ".join(map(str, sorted(found))) or "none"
        raise ConfigError(
            f"branch: no checkpoint at step {cfg.branch.step} in {folder}; saved steps: {steps} "
            "(add the step to the base's checkpoint.steps)"
        )
    path = found[cfg.branch.step]
    if not is_complete(path):
        raise ConfigError(
            f"branch: the base's checkpoint {path} is incomplete (its run was stopped while saving "
            "it): branch from another step, or resume the base to save it again"
        )
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


# -- a run killed while it saved ------------------------------------------------------------------------
# Composer writes a full checkpoint straight to its final name, then removes `latest-rank0.pt` and links it
# again; DCP writes `.metadata` last (through a temporary name). So a run killed by Slurm's SIGTERM/SIGKILL
# while it saved leaves a truncated `ep{E}-ba{B}-rank0.pt`, a DCP directory without `.metadata`, or no
# latest link: Composer then refuses to resume ("… may conflict with a future checkpoint") or starts over.
# `recover` runs before the trainer is built, on every rank (each step is idempotent and tolerates another
# rank having done it first), and makes the folder what a run stopped after its last complete save leaves.

INCOMPLETE = "incomplete"


def is_complete(path: Path) -> bool:
    """Whether a checkpoint was written to the end: a DCP directory has its `.metadata`; a full checkpoint
    is a zip (torch.save's format) whose central directory reads and whose members lie inside the file."""
    import zipfile

    if path.is_dir():
        return is_sharded(path) and (path / ".metadata").stat().st_size > 0
    try:
        with zipfile.ZipFile(path) as z:
            size = path.stat().st_size
            return all(i.header_offset + i.compress_size <= size for i in z.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _candidates(folder: Path) -> dict[int, Path]:
    """Every checkpoint-named entry by step, complete or not (a truncated DCP directory has no .metadata)."""
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("ep*-ba*")):
        step = step_of(path)
        if step is not None and (path.is_dir() or path.name.endswith("-rank0.pt")):
            found[step] = path
    return found


def recover(folder: Path) -> list[str]:
    """Move incomplete checkpoints of `folder` to `folder/incomplete/` and link `latest-rank0.pt` to the
    newest complete one (or remove the link when there is none). Returns what it did, one line each."""
    if not folder.is_dir():
        return []
    done = []
    complete = {}
    for step, path in _candidates(folder).items():
        if is_complete(path):
            complete[step] = path
            continue
        aside = folder / INCOMPLETE
        aside.mkdir(exist_ok=True)
        to = aside / path.name
        n = 1
        while to.exists() or to.is_symlink():
            to, n = aside / f"{path.name}.{n}", n + 1
        try:
            path.rename(to)
        except FileNotFoundError:
            continue  # another rank moved it
        done.append(f"checkpoint {path.name} is incomplete (the run was stopped while saving it): moved to {to}")
    latest = folder / LATEST
    target = complete[max(complete)] if complete else None
    current = latest.resolve() if latest.is_symlink() else None
    if target is not None and current != target.resolve():
        tmp = folder / f".{LATEST}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        tmp.replace(latest)  # atomic: another rank may be doing the same
        done.append(f"{LATEST} now links to {target.name}, the newest complete checkpoint")
    elif target is None and latest.is_symlink():
        latest.unlink(missing_ok=True)
        done.append(f"{LATEST} removed: no complete checkpoint is left, so the run starts over")
    return done
