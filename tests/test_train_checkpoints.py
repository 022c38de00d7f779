"""Checkpoints across world sizes and in both forms, on CPU with gloo: a full checkpoint saved by one
process resumes on two, a sharded (DCP) checkpoint saved by two resumes on one, and both continue
like the uninterrupted run (same samples at each step, same losses); a branch starts from a sharded
base on another world size, `model.init_from` reads a sharded run's weights into an unsharded model,
and a checkpoint of the other form is refused with the setting to change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import midmix
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from conftest import TinyRuns  # noqa: E402
from trainutil import STEPS, G, audit, copy_run, metrics, recipe, recipe_of, rewind, start, train  # noqa: E402

CHECKPOINT = 4
# The form: (the shared run that saved it, ranks that saved, ranks that resume).
RESUMES = {"full": ("scheduled", 1, 2), "sharded": ("sharded", 2, 1)}


@pytest.fixture(scope="module")
def data(train_data: Path) -> Path:
    return train_data


def form_recipe(data: Path, run_dir: Path, form: str, **changes) -> dict:
    return recipe(data, run_dir, fsdp={"state_dict_type": form}, **changes)


def loss_lines(run_dir: Path) -> list[int]:
    """The step of every loss/train/total line in metrics.jsonl, in the order they were logged."""
    lines = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["step"] for r in lines if "loss/train/total" in r]


@pytest.fixture(scope="module")
def resumed(tiny_runs: TinyRuns, tmp_path_factory) -> dict[str, dict]:
    """Per form: a copy of the session's run of that form (trained to the end on one world size), rewound
    to its checkpoint at CHECKPOINT and resumed on the other world size."""
    root = tmp_path_factory.mktemp("forms")
    out = {}
    for form, (name, _, then) in RESUMES.items():
        run_dir = copy_run(tiny_runs[name], root / form)
        rewind(run_dir, CHECKPOINT)
        r = recipe_of(run_dir)
        r["fsdp"] = {"state_dict_type": form}  # (the one-process run saved full checkpoints without FSDP)
        out[form] = {"run_dir": run_dir, "reference": metrics(tiny_runs[name]), "summary": train(r, ranks=then)}
    return out


def batch_sha(mix: Path, step: int, rank: int, world: int) -> str:
    """What DataAudit records for a rank's part of global step `step`."""
    from midmix.loaders import MixDataset

    ids = MixDataset(mix, G, rank=rank, world_size=world).batch(step)["input_ids"]
    return hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()


@pytest.mark.parametrize("form", sorted(RESUMES))
def test_a_checkpoint_resumes_on_another_world_size(resumed, data, form) -> None:
    _, first, then = RESUMES[form]
    run = resumed[form]
    assert run["summary"]["world_size"] == then and run["summary"]["steps"] == STEPS
    # It resumed at the checkpoint: the steps after it were logged twice, nothing before it again.
    assert loss_lines(run["run_dir"]) == list(range(STEPS)) + list(range(CHECKPOINT, STEPS))
    # Each rank of the new world size read its strided part of the very global batches of the mix.
    for rank in range(then):
        got = audit(run["run_dir"], rank)
        for step in range(CHECKPOINT, STEPS):
            assert got[step]["samples"] == G // then
            assert got[step]["sha256"] == batch_sha(data / "code-mix", step, rank, then), (rank, step)
    # And trained on like the uninterrupted run (FSDP2 over 2 ranks reduces in another order: 2e-4).
    now = metrics(run["run_dir"])
    for key in ("loss/train/total", "forgetting/loss", "domain/loss", "mixture/code/share"):
        want = {s: v for s, _, v in run["reference"][key] if s >= CHECKPOINT}
        got = {s: v for s, _, v in now[key] if s >= CHECKPOINT}
        assert got.keys() == want.keys() and got, key
        np.testing.assert_allclose(
            [got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=2e-4, err_msg=key
        )


def test_a_branch_starts_from_a_sharded_base_on_another_world_size(resumed, data, tmp_path) -> None:
    base = resumed["sharded"]["run_dir"]  # saved by 2 ranks (up to CHECKPOINT, then by 1)
    r = form_recipe(data, tmp_path / "branch", "sharded", branch={"run": str(base), "step": CHECKPOINT})
    summary = train(r, ranks=1)
    assert summary["steps"] == STEPS
    got = audit(tmp_path / "branch")
    assert sorted(got) == list(range(CHECKPOINT, STEPS))
    assert all(got[s]["sha256"] == batch_sha(data / "code-mix", s, 0, 1) for s in got)
    mb, ref = metrics(tmp_path / "branch"), resumed["sharded"]["reference"]
    for key in ("loss/train/total", "lr-AdamW/group0", "forgetting/loss"):
        want = {s: v for s, _, v in ref[key] if s >= CHECKPOINT}
        have = {s: v for s, _, v in mb[key]}  # (LRMonitor logs step t's rate as t + 1: from CHECKPOINT + 1)
        assert have and have.keys() <= want.keys(), key
        np.testing.assert_allclose(
            [have[s] for s in sorted(have)], [want[s] for s in sorted(have)], rtol=2e-4, err_msg=key
        )
    first_delta = mb["forgetting/delta"][0]
    assert first_delta[0] == CHECKPOINT and first_delta[2] == 0.0  # the branch's callbacks start afresh


def test_init_from_a_sharded_run_reads_its_last_weights(tiny_runs, data, tmp_path) -> None:
    base = tiny_runs["sharded"]
    r = recipe(
        data,
        tmp_path / "init",
        duration="1ba",
        model={"arch": "tiny", "init_from": str(base)},
        checkpoint={"enabled": False},
        callbacks={"forgetting": {"eval": "general", "interval": "4ba"}},
    )
    train(r, ranks=1)  # one process, no FSDP: the DCP weights load into a plain model
    start = metrics(tmp_path / "init")["forgetting/loss"][0]
    final = metrics(base)["forgetting/loss"][-1]  # measured at the base's end, on its last weights
    assert start[0] == 0 and final[0] == STEPS
    assert start[2] == pytest.approx(final[2], rel=1e-5)


def test_a_checkpoint_of_the_other_form_is_refused_with_the_setting_to_change(resumed, data) -> None:
    from midmix.train.checkpoints import branch_checkpoint, check_resume, load_sharded_weights
    from midmix.train.config import from_dict
    from midmix.train.models import build_model

    sharded, full = resumed["sharded"]["run_dir"], resumed["full"]["run_dir"]

    def cfg(base: Path, fsdp: dict | None) -> object:
        r = recipe(data, base.parent / "x", branch={"run": str(base), "step": CHECKPOINT})
        r["fsdp"] = fsdp
        return from_dict(r)

    with pytest.raises(
        midmix.ConfigError,
        match=r"branch: the base's checkpoint at step 4, .*ep0-ba4 is a sharded "
        r"checkpoint.*set fsdp.state_dict_type: sharded",
    ):
        branch_checkpoint(cfg(sharded, None))
    with pytest.raises(
        midmix.ConfigError,
        match=r"ep0-ba4-rank0.pt is a full checkpoint, and this recipe saves and "
        r"loads sharded ones; set fsdp.state_dict_type: full",
    ):
        branch_checkpoint(cfg(full, {"state_dict_type": "sharded"}))
    assert branch_checkpoint(cfg(sharded, {"state_dict_type": "sharded"})).name == "ep0-ba4"
    assert branch_checkpoint(cfg(full, {"state_dict_type": "full"})).name == "ep0-ba4-rank0.pt"
    with pytest.raises(midmix.ConfigError, match=r"no checkpoint at step 3 .*saved steps: 4, 8, 12, 16"):
        c = cfg(sharded, {"state_dict_type": "sharded"})
        c.branch.step = 3
        branch_checkpoint(c)
    # Resuming a run under the other form is refused the same way.
    with pytest.raises(
        midmix.ConfigError,
        match=r"fsdp.state_dict_type: the run's latest checkpoint, .* is a "
        r"sharded checkpoint",
    ):
        check_resume(cfg(sharded, {"state_dict_type": "full"}), sharded / "checkpoints" / "latest-rank0.pt")
    # Sharded weights of another architecture do not load.
    with pytest.raises(midmix.ConfigError, match=r"model.init_from: .*ep0-ba8 does not match model.arch"):
        load_sharded_weights(build_model("pythia-14m", None, 512, 64, 0), sharded / "checkpoints" / "ep0-ba8")


def test_recover_moves_incomplete_checkpoints_aside_and_links_the_newest_complete(tmp_path) -> None:
    """What a run killed while saving leaves (Composer writes a full checkpoint to its final name, then
    removes and re-creates the latest link; DCP writes .metadata last), made good without training."""
    from midmix.train.checkpoints import LATEST, is_complete, recover

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"state": {"x": torch.arange(1000)}}, folder / "ep0-ba4-rank0.pt")
    torch.save({"state": {"x": torch.arange(1000)}}, folder / "ep0-ba8-rank0.pt")
    whole = (folder / "ep0-ba8-rank0.pt").read_bytes()
    (folder / "ep0-ba8-rank0.pt").write_bytes(whole[: len(whole) - 100])  # killed while writing step 8
    (folder / "ep0-ba12").mkdir()  # a DCP save killed before its .metadata
    (folder / "ep0-ba12" / "__0_0.distcp").write_bytes(b"\0" * 64)
    (folder / "unrelated.txt").write_text("kept")
    assert is_complete(folder / "ep0-ba4-rank0.pt") and not is_complete(folder / "ep0-ba8-rank0.pt")
    done = recover(folder)  # no latest link: killed between removing and re-creating it
    assert len(done) == 3, done
    assert (folder / LATEST).resolve() == (folder / "ep0-ba4-rank0.pt").resolve()
    assert sorted(p.name for p in (folder / "incomplete").iterdir()) == ["ep0-ba12", "ep0-ba8-rank0.pt"]
    assert (folder / "unrelated.txt").read_text() == "kept"
    assert recover(folder) == []  # idempotent: every rank runs it
    # A newer complete checkpoint than the link (killed after the save, before the link) becomes latest.
    (folder / "ep0-ba16-rank0.pt").write_bytes((folder / "ep0-ba4-rank0.pt").read_bytes())
    assert recover(folder) == [f"{LATEST} now links to ep0-ba16-rank0.pt, the newest complete checkpoint"]
    # Nothing complete left: the link goes, and the run starts over.
    for p in ("ep0-ba4-rank0.pt", "ep0-ba16-rank0.pt"):
        (folder / p).write_bytes(b"PK\3\4 truncated")
    assert recover(folder)[-1].startswith(f"{LATEST} removed") and not (folder / LATEST).is_symlink()
    assert len(list((folder / "incomplete").iterdir())) == 4


def test_a_run_killed_while_saving_resumes_from_its_last_complete_checkpoint(tiny_runs: TinyRuns, tmp_path) -> None:
    """The full tiny run, as Slurm's SIGTERM at a time limit leaves it in the middle of saving step 8: a
    truncated ep0-ba8-rank0.pt and no latest link. It resumes from step 4 and trains on like the run that
    was never stopped (it used to refuse: "… may conflict with a future checkpoint")."""
    run_dir = copy_run(tiny_runs["scheduled"], tmp_path / "killed")
    folder = run_dir / "checkpoints"
    whole = (folder / "ep0-ba8-rank0.pt").read_bytes()
    rewind(run_dir, CHECKPOINT)
    (folder / "ep0-ba8-rank0.pt").write_bytes(whole[: len(whole) // 2])
    (folder / "latest-rank0.pt").unlink()
    proc = start(recipe_of(run_dir))
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    # It says what it found and where it resumes.
    assert "checkpoint ep0-ba8-rank0.pt is incomplete" in out and "resumes from ep0-ba4-rank0.pt (step 4)" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == STEPS
    assert loss_lines(run_dir) == list(range(STEPS)) + list(range(CHECKPOINT, STEPS))
    assert (folder / "incomplete" / "ep0-ba8-rank0.pt").stat().st_size == len(whole) // 2
    reference, now = metrics(tiny_runs["scheduled"]), metrics(run_dir)
    want = {s: v for s, _, v in reference["loss/train/total"] if s >= CHECKPOINT}
    got = {s: v for s, _, v in now["loss/train/total"] if s >= CHECKPOINT}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
