"""Composer training on CPU: tiny recipes end to end, the branch form against one scheduled run,
kill-and-resume (pretraining and SFT) against an uninterrupted run, two gloo ranks with FSDP2, SFT prompt masking."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import midmix
import numpy as np
import pytest
from conftest import PYTHIA, TinyRuns
from mixutil import scheduled_targets
from trainutil import (
    BRANCH,
    DEMO,
    SEQ,
    STEPS,
    G,
    audit,
    copy_run,
    kill_after_first_checkpoint,
    metrics,
    recipe,
    recipe_of,
    start,
    train,
)

torch = pytest.importorskip("torch")
pytest.importorskip("composer")


@pytest.fixture(scope="module")
def data(train_data: Path) -> Path:
    return train_data


@pytest.fixture(scope="module")
def runs(tiny_runs: TinyRuns) -> TinyRuns:
    """The base (prose only), one run over the scheduled mix, and the branch from the base at BRANCH (built
    once per session: conftest.TinyRuns)."""
    return tiny_runs


def test_tiny_runs_log_finite_metrics(runs) -> None:
    m = metrics(runs["branch"])
    for key in [
        "loss/train/total",
        "forgetting/loss",
        "forgetting/delta",
        "domain/loss",
        "domain/delta",
        "mixture/prose/share",
        "mixture/code/planned",
        "alignment/cosine",
        "alignment/dot",
        "lr-AdamW/group0",
    ]:
        assert key in m, key
        assert all(math.isfinite(v) for _, _, v in m[key]), key
    assert all(-1 <= v <= 1 for _, _, v in m["alignment/cosine"])
    # The first value of each held-out loss is taken at the run's start, so its delta is 0.
    assert m["forgetting/delta"][0][2] == 0.0 and m["forgetting/delta"][0][0] == BRANCH
    summary = json.loads((runs["base"] / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == STEPS and summary["tokens"] == STEPS * G * SEQ
    assert m["loss/train/total"][-1][2] < m["loss/train/total"][0][2]  # it learns
    # Throughput from SpeedMonitor (MFU needs a device whose peak FLOPs Composer knows: not a CPU).
    base = metrics(runs["base"])
    for key in ("throughput/tokens_per_sec", "throughput/samples_per_sec", "throughput/device/flops_per_sec"):
        assert key in base and all(v > 0 for *_, v in base[key]), key
    assert len(base["throughput/tokens_per_sec"]) == STEPS - 4  # logged once the 4-batch window is full
    t = summary["throughput"]
    assert t["tokens_per_sec"] > 0 and t["device_flops_per_sec"] > 0 and "mfu" not in t


def test_branch_sees_the_batches_of_one_scheduled_run(runs) -> None:
    branch, scheduled = audit(runs["branch"]), audit(runs["scheduled"])
    assert sorted(branch) == list(range(BRANCH, STEPS))
    for step in branch:
        assert branch[step]["sha256"] == scheduled[step]["sha256"], step
    # The base's first BRANCH steps are the scheduled run's (the schedule starts with prose only).
    base = audit(runs["base"])
    assert all(base[s]["sha256"] == scheduled[s]["sha256"] for s in range(BRANCH))
    # Same weights, optimizer state, schedule and data from the branch point: the same numbers.
    mb, ms = metrics(runs["branch"]), metrics(runs["scheduled"])
    for key in ["loss/train/total", "forgetting/loss", "domain/loss", "lr-AdamW/group0"]:
        tail = {s: v for s, _, v in ms[key] if s >= BRANCH}
        got = {s: v for s, _, v in mb[key]}
        assert got.keys() <= tail.keys() and got, key
        for s, v in got.items():
            assert v == pytest.approx(tail[s], rel=1e-5, abs=1e-7), (key, s)


def test_mixture_monitor_matches_the_plan_and_the_schedule_oracle(runs, data) -> None:
    m = metrics(runs["scheduled"])
    assert max(v for _, _, v in m["mixture/max_abs_error_samples"]) < 1
    from midmix.api import planned_counts

    report = midmix.read_manifest(data / "code-mix")
    half = STEPS * G // 2
    oracle = scheduled_targets([(half, [1.0, 0.0], False), (half, [0.5, 0.5], True)], STEPS * G)
    for n in range(STEPS * G + 1):
        np.testing.assert_allclose(planned_counts(report, n), oracle[n], atol=1e-9)


def test_kill_and_resume_continues_like_an_uninterrupted_run(runs, data, tmp_path) -> None:
    run_dir = tmp_path / "killed"
    r = recipe(data, run_dir)
    kill_after_first_checkpoint(r)
    train(r)
    reference, resumed = audit(runs["scheduled"]), audit(run_dir)
    assert {s: v["sha256"] for s, v in resumed.items()} == {s: v["sha256"] for s, v in reference.items()}
    mr, mk = metrics(runs["scheduled"]), metrics(run_dir)
    for key in ["loss/train/total", "forgetting/loss", "forgetting/delta", "domain/loss", "mixture/code/share"]:
        assert [s for s, _, _ in mk[key]] == [s for s, _, _ in mr[key]], key
        np.testing.assert_allclose([v for *_, v in mk[key]], [v for *_, v in mr[key]], rtol=1e-5, atol=1e-7)


def test_rerun_of_a_completed_run_is_a_no_op_and_a_changed_recipe_is_refused(runs, data, tmp_path) -> None:
    run = copy_run(runs["scheduled"], tmp_path / "scheduled")
    r = recipe_of(run)
    before = (run / "metrics.jsonl").read_bytes()
    train(r)
    assert (run / "metrics.jsonl").read_bytes() == before
    r["optimizer"]["lr"] = 1e-3
    proc = start(r)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "different recipe" in out


def test_two_gloo_ranks_with_fsdp2_match_one_process(runs) -> None:
    """`sharded`: the scheduled recipe on 2 ranks with FSDP2 (its sharded checkpoints are
    test_train_checkpoints.py's)."""
    two_ranks = runs["sharded"]
    summary = json.loads((two_ranks / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == STEPS
    # Each rank read its strided half of every global batch.
    for rank in range(2):
        assert sorted(audit(two_ranks, rank)) == list(range(STEPS))
        assert all(rec["samples"] == G // 2 for rec in audit(two_ranks, rank).values())
    one, two = metrics(runs["scheduled"]), metrics(two_ranks)
    for key in ["loss/train/total", "forgetting/loss", "domain/loss"]:
        np.testing.assert_allclose([v for *_, v in two[key]], [v for *_, v in one[key]], rtol=2e-4)


def test_streaming_loader_refuses_an_index_mix(data) -> None:
    from midmix.train.config import DataSetConfig
    from midmix.train.recipe_loaders import dataset_info, train_loader

    cfg = DataSetConfig(path=str(data / "code-mix"), loader="streaming")
    with pytest.raises(midmix.ConfigError, match="is an index mix over its sources: use loader: midmix"):
        train_loader(cfg, dataset_info(cfg.path, "data.train"), G, 0)


def test_streaming_loader_feeds_the_same_batches(runs, data, tmp_path) -> None:
    exported = midmix.export(data / "code-mix", tmp_path / "code-mix-mds")
    assert exported.form == "mds"
    r = recipe(
        data,
        tmp_path / "streaming",
        duration="6ba",
        data__train__loader="streaming",
        data__train__path=str(tmp_path / "code-mix-mds"),
    )
    train(r)
    got, reference = audit(Path(r["run_dir"])), audit(runs["scheduled"])
    assert sorted(got) == list(range(6))
    assert all(got[s] == reference[s] for s in got)  # same token ids and per-source counts


def test_report_table_and_png(runs, tmp_path) -> None:
    png = tmp_path / "curves.png"
    out = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "report", str(runs["base"]), str(runs["branch"]), "--out", str(png)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "base" in out and "branch" in out and png.stat().st_size > 10_000
    rows = json.loads(
        subprocess.run(
            [sys.executable, "-m", "midmix.cli", "report", str(runs["branch"]), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    final = metrics(runs["branch"])["forgetting/loss"][-1][2]
    assert rows[0]["general loss"] == f"{final:.4f}"


def test_sft_masks_the_prompt_of_real_gsm8k_and_trains(data, tmp_path) -> None:
    from midmix.loaders import SftDataset, pad_examples
    from midmix.train.models import CausalLM, neox_config, shifted_loss
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(PYTHIA))
    rows = [json.loads(line) for line in (DEMO / "gsm8k.jsonl").read_text().splitlines()[:32]]
    ds = SftDataset(data / "gsm8k", range(32))
    for (ids, labels), row in zip(ds, rows, strict=True):
        prompt = tok.encode(row["prompt"], add_special_tokens=False).ids
        response = tok.encode(row["response"], add_special_tokens=False).ids
        full = (prompt + response + [0])[:256]
        assert ids.tolist() == full
        assert labels.tolist() == ([-100] * len(prompt) + full[len(prompt) :])[:256]
    # The loss is the mean over response tokens only, whatever the padding.
    from transformers import GPTNeoXForCausalLM

    model = CausalLM(GPTNeoXForCausalLM(neox_config("tiny")))
    batch = pad_examples([ds[i] for i in range(4)])
    with torch.no_grad():
        logits = model(batch)
        loss = float(model.loss(logits, batch))
        per_token = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none"
        )
        scored = batch["labels"][:, 1:] != -100
        assert loss == pytest.approx(float(per_token[scored].mean()), rel=1e-5)
        assert float(shifted_loss(logits, batch["labels"], "sum")) == pytest.approx(
            float(per_token[scored].sum()), rel=1e-5
        )
    r = recipe(
        data,
        tmp_path / "sft",
        duration="2ep",
        data={
            "train": {"path": str(data / "gsm8k"), "kind": "sft", "select": ":16"},
            "eval": {
                "gsm8k": {"path": str(data / "gsm8k"), "kind": "sft", "select": "560:", "max_samples": 8},
                "general": {"path": str(data / "prose_val"), "max_samples": 8},
            },
            "global_batch_size": G,
            "eval_batch_size": 4,
        },
        callbacks={
            "domain": {"eval": "gsm8k", "interval": "4ba"},
            "forgetting": {"eval": "general", "interval": "4ba"},
        },
        checkpoint={"interval": None, "weights_only": True},
    )
    summary = train(r)
    assert summary["steps"] == 2 * 16 // G
    lr = [v for *_, v in metrics(tmp_path / "sft")["lr-AdamW/group0"]]
    assert lr[-1] < 0.1 * max(lr)  # the cosine reaches its end within the epochs
    assert math.isfinite(summary["final"]["domain/loss"])


def test_sft_killed_mid_epoch_resumes_with_the_same_batches(data, tmp_path) -> None:
    """SFT reads a map-style set through Composer's sampler; a resume must land mid-epoch on the same order."""

    def sft(run_dir: Path) -> dict:  # 24 examples, 6 batches per epoch; the checkpoint at batch 7 is mid-epoch 2
        return recipe(
            data,
            run_dir,
            duration="2ep",
            data={
                "train": {"path": str(data / "gsm8k"), "kind": "sft", "select": ":24"},
                "eval": {"general": {"path": str(data / "prose_val"), "max_samples": 8}},
                "global_batch_size": G,
                "eval_batch_size": 4,
            },
            callbacks={"forgetting": {"eval": "general", "interval": "3ba"}, "audit": True},
            checkpoint={"interval": "7ba"},
        )

    train(sft(tmp_path / "reference"))
    killed = sft(tmp_path / "killed")
    kill_after_first_checkpoint(killed)
    train(killed)
    reference, resumed = audit(tmp_path / "reference"), audit(tmp_path / "killed")
    assert sorted(resumed) == list(range(12))
    assert {s: v["sha256"] for s, v in resumed.items()} == {s: v["sha256"] for s, v in reference.items()}
    mr, mk = metrics(tmp_path / "reference"), metrics(tmp_path / "killed")
    for key in ["loss/train/total", "forgetting/loss", "forgetting/delta"]:
        np.testing.assert_allclose([v for *_, v in mk[key]], [v for *_, v in mr[key]], rtol=1e-5, atol=1e-7)


def test_recipe_errors_name_the_key(tmp_path) -> None:
    from midmix.train import config

    def load(text: str, *overrides: str) -> None:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        config.load(path, overrides)

    base = "data: {train: {path: x}}\n"
    with pytest.raises(midmix.ConfigError, match=r"unknown key optimizer\.lrr"):
        load(base + "optimizer: {lrr: 1}\n")
    with pytest.raises(midmix.ConfigError, match=r"optimizer\.lr: expected float"):
        load(base, "optimizer.lr=fast")
    with pytest.raises(midmix.ConfigError, match=r"duration: '10 steps'"):
        load(base + "duration: 10 steps\n")
    with pytest.raises(midmix.ConfigError, match=r"callbacks\.forgetting\.eval: 'c4'"):
        load(base + "callbacks: {forgetting: {eval: c4}}\n")
    with pytest.raises(midmix.ConfigError, match=r"model\.arch"):
        load(base + "model: {arch: gpt5}\n")
    (tmp_path / "r.yaml").write_text(base)
    cfg, _ = config.load(tmp_path / "r.yaml", ["optimizer.lr=1e-3", "schedule.name=wsd"])
    assert cfg.optimizer.lr == 1e-3 and cfg.schedule.name == "wsd"


def test_schedules_are_continuous_and_end_at_the_floor() -> None:
    from midmix.train.config import ScheduleConfig
    from midmix.train.schedules import lr_multiplier

    for cfg in [
        ScheduleConfig(name="cosine", warmup=0.1),
        *(ScheduleConfig(name="wsd", warmup=0.1, decay_start=0.7, decay_shape=s) for s in ("linear", "cosine", "sqrt")),
    ]:
        xs = np.linspace(0, 1, 2001)
        ys = np.array([lr_multiplier(cfg, x, 0.01) for x in xs])
        assert ys[0] == 0 and ys[-1] == pytest.approx(0.01) and ys.max() == pytest.approx(1.0)
        assert np.abs(np.diff(ys)).max() < 0.05  # no jumps (the sqrt decay is steep at its start)
        if cfg.name == "wsd":
            assert (ys[(xs >= 0.1) & (xs <= 0.7)] == 1.0).all()  # the stable plateau


def test_each_step_runs_at_the_schedule_at_its_end(runs) -> None:
    """Step t of T runs at the schedule's value at (t + 1) / T: no step at the warmup's 0, the last at
    the floor. LRMonitor logs, at the end of step t (logged as step t + 1), the rate of step t + 1."""
    from types import SimpleNamespace

    from composer.core import Time, Timestamp, TimeUnit
    from midmix.train.config import ScheduleConfig
    from midmix.train.schedules import DurationSchedule, lr_multiplier

    cfg = ScheduleConfig(name="cosine", warmup=0.25)
    lr = {step: v for step, _, v in metrics(runs["base"])["lr-AdamW/group0"]}
    assert sorted(lr) == list(range(1, STEPS + 1))
    for k, v in lr.items():  # (after the last step: the floor)
        assert v == pytest.approx(3e-3 * lr_multiplier(cfg, min((k + 1) / STEPS, 1.0), 1e-6 / 3e-3), rel=1e-9), k
    assert lr[STEPS - 1] == pytest.approx(1e-6)  # the last step runs at the floor
    # Step 0, as the trainer sets it up before any step: above 0.
    schedule = DurationSchedule(cfg, 3e-3)
    state = SimpleNamespace(timestamp=Timestamp(), max_duration=Time(STEPS, TimeUnit.BATCH), dataloader_len=None)
    assert schedule(state) == pytest.approx(1 / (0.25 * STEPS))
