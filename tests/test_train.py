"""Composer training on CPU: tiny recipes end to end, the branch form against one scheduled run,
kill-and-resume (pretraining and SFT) against an uninterrupted run, two gloo ranks with FSDP2, SFT prompt masking."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import midmix
import numpy as np
import pytest
import yaml
from conftest import PYTHIA, ROOT, mix_of
from mixutil import scheduled_targets

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

DEMO = ROOT / "demo" / "data"
G, SEQ, STEPS, BRANCH = 4, 64, 16, 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train-data")
    for name, src in [("prose", "prose.jsonl"), ("code", "code.jsonl.zst"), ("prose_val", "prose_val.jsonl"),
                      ("code_val", "code_val.jsonl")]:
        midmix.prepare(name, [str(DEMO / src)], tokenizer=PYTHIA, seq_len=SEQ, out=d / name)
    midmix.prepare("gsm8k", [str(DEMO / "gsm8k.jsonl")], tokenizer=PYTHIA, seq_len=256, out=d / "gsm8k",
                   mode="sft")
    sources = [("prose", str(d / "prose")), ("code", str(d / "code"))]
    half = STEPS * G // 2
    mix_of(sources[:1], [("samples", STEPS * G, [("prose", 1.0)], False)], d / "base-mix", global_batch=G)
    mix_of(sources,
           [("samples", half, [("prose", 1.0)], False),
                              ("samples", half, [("prose", 0.5), ("code", 0.5)], True)],
           d / "code-mix", global_batch=G)
    return d


def recipe(datadir: Path, run_dir: Path, **changes) -> dict:
    r = {
        "run_name": run_dir.name, "run_dir": str(run_dir), "seed": 5, "duration": f"{STEPS}ba",
        "model": {"arch": "tiny"},
        "data": {"train": {"path": str(datadir / "code-mix")},
                 "eval": {"general": {"path": str(datadir / "prose_val"), "max_samples": 16},
                          "code": {"path": str(datadir / "code_val"), "max_samples": 16}},
                 "global_batch_size": G, "eval_batch_size": 8},
        "optimizer": {"lr": 3e-3},
        "schedule": {"name": "cosine", "warmup": 0.25},
        "callbacks": {"forgetting": {"eval": "general", "interval": "4ba"},
                      "domain": {"eval": "code", "interval": "4ba"},
                      "mixture": {"interval": "4ba"}, "audit": True},
        "loggers": {"progress_bar": False, "console_interval": "100ba", "speed_window": 4},
        "checkpoint": {"interval": "4ba"},
    }
    for key, value in changes.items():
        node = r
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return r


def command(recipe_path: Path, ranks: int) -> list[str]:
    if ranks == 1:  # `midmix train`, the one-process entry point
        return [sys.executable, "-m", "midmix.cli", "train", str(recipe_path)]
    launcher = Path(sys.executable).parent / "composer"
    return [str(launcher), "-n", str(ranks), "--master_port", str(29400 + os.getpid() % 500),
            "-m", "midmix.train", str(recipe_path)]


def start(r: dict, ranks: int = 1) -> subprocess.Popen:
    run_dir = Path(r["run_dir"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(r))
    tmp = run_dir.parent / f"{run_dir.name}.tmp"  # streaming leaves lock files in TMPDIR: one per run
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command(path, ranks), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def train(r: dict, ranks: int = 1) -> dict:
    proc = start(r, ranks)
    out, _ = proc.communicate(timeout=900)
    summary = Path(r["run_dir"]) / "summary.json"
    # The composer launcher can exit 0 when a rank fails: the run's own completion record decides.
    assert proc.returncode == 0 and summary.exists(), out[-4000:]
    return json.loads(summary.read_text())


def kill_after_first_checkpoint(r: dict) -> None:
    """Start the run and SIGKILL it as soon as its first checkpoint is on disk."""
    run_dir = Path(r["run_dir"])
    proc = start(r)
    latest = run_dir / "checkpoints" / "latest-rank0.pt"
    deadline = time.time() + 600
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"


def audit(run_dir: Path, rank: int = 0) -> dict[int, dict]:
    steps = {}
    for line in (run_dir / f"audit-rank{rank}.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps[record["step"]] = record  # after a resume, the later line wins
    return steps


def metrics(run_dir: Path) -> dict[str, list[tuple[int, int, float]]]:
    from midmix.report import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """The base (prose only), one run over the scheduled mix, and the branch from the base at BRANCH."""
    root = tmp_path_factory.mktemp("runs")
    base = recipe(data, root / "base", data__train__path=str(data / "base-mix"),
                  checkpoint={"interval": "5ba", "steps": [BRANCH]},
                  callbacks={"forgetting": {"eval": "general", "interval": "4ba"}, "audit": True})
    train(base)
    train(recipe(data, root / "scheduled"))
    branch = recipe(data, root / "branch", branch={"run": str(root / "base"), "step": BRANCH})
    branch["callbacks"]["gradient_alignment"] = {"probe": "general", "interval": "3ba"}
    train(branch)
    return {"base": root / "base", "scheduled": root / "scheduled", "branch": root / "branch"}


def test_tiny_runs_log_finite_metrics(runs) -> None:
    m = metrics(runs["branch"])
    for key in ["loss/train/total", "forgetting/loss", "forgetting/delta", "domain/loss", "domain/delta",
                "mixture/prose/share", "mixture/code/planned", "alignment/cosine", "alignment/dot", "lr-AdamW/group0"]:
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


def test_kill_and_resume_continues_like_an_uninterrupted_run(runs, data) -> None:
    run_dir = runs["scheduled"].parent / "killed"
    r = recipe(data, run_dir)
    kill_after_first_checkpoint(r)
    train(r)
    reference, resumed = audit(runs["scheduled"]), audit(run_dir)
    assert {s: v["sha256"] for s, v in resumed.items()} == {s: v["sha256"] for s, v in reference.items()}
    mr, mk = metrics(runs["scheduled"]), metrics(run_dir)
    for key in ["loss/train/total", "forgetting/loss", "forgetting/delta", "domain/loss", "mixture/code/share"]:
        assert [s for s, _, _ in mk[key]] == [s for s, _, _ in mr[key]], key
        np.testing.assert_allclose([v for *_, v in mk[key]], [v for *_, v in mr[key]], rtol=1e-5, atol=1e-7)


def test_rerun_of_a_completed_run_is_a_no_op_and_a_changed_recipe_is_refused(runs, data) -> None:
    r = yaml.safe_load((runs["scheduled"].parent / "scheduled.yaml").read_text())
    before = (runs["scheduled"] / "metrics.jsonl").read_bytes()
    train(r)
    assert (runs["scheduled"] / "metrics.jsonl").read_bytes() == before
    r["optimizer"]["lr"] = 1e-3
    proc = start(r)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "different recipe" in out


def test_two_gloo_ranks_with_fsdp2_match_one_process(runs, data) -> None:
    r = recipe(data, runs["scheduled"].parent / "fsdp2", fsdp={"state_dict_type": "full"})
    summary = train(r, ranks=2)
    assert summary["world_size"] == 2 and summary["steps"] == STEPS
    # Each rank read its strided half of every global batch.
    for rank in range(2):
        assert sorted(audit(Path(r["run_dir"]), rank)) == list(range(STEPS))
        assert all(rec["samples"] == G // 2 for rec in audit(Path(r["run_dir"]), rank).values())
    one, two = metrics(runs["scheduled"]), metrics(Path(r["run_dir"]))
    for key in ["loss/train/total", "forgetting/loss", "domain/loss"]:
        np.testing.assert_allclose([v for *_, v in two[key]], [v for *_, v in one[key]], rtol=2e-4)


def test_streaming_loader_refuses_an_index_mix(data) -> None:
    from midmix.train.config import DataSetConfig
    from midmix.train.datasets import dataset_info, train_loader

    cfg = DataSetConfig(path=str(data / "code-mix"), loader="streaming")
    with pytest.raises(midmix.ConfigError, match="is an index mix over its sources: use loader: midmix"):
        train_loader(cfg, dataset_info(cfg.path, "data.train"), G, 0)


def test_streaming_loader_feeds_the_same_batches(runs, data) -> None:
    exported = midmix.export(data / "code-mix", data / "code-mix-mds", overwrite=True)
    assert exported.form == "mds"
    r = recipe(data, runs["scheduled"].parent / "streaming", duration="6ba", data__train__loader="streaming",
               data__train__path=str(data / "code-mix-mds"))
    train(r)
    got, reference = audit(Path(r["run_dir"])), audit(runs["scheduled"])
    assert sorted(got) == list(range(6))
    assert all(got[s] == reference[s] for s in got)  # same token ids and per-source counts


def test_report_table_and_png(runs, tmp_path) -> None:
    png = tmp_path / "curves.png"
    out = subprocess.run([sys.executable, "-m", "midmix.cli", "report", str(runs["base"]), str(runs["branch"]),
                          "--out", str(png)], capture_output=True, text=True, check=True).stdout
    assert "base" in out and "branch" in out and png.stat().st_size > 10_000
    rows = json.loads(subprocess.run([sys.executable, "-m", "midmix.cli", "report", str(runs["branch"]), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    final = metrics(runs["branch"])["forgetting/loss"][-1][2]
    assert rows[0]["general loss"] == f"{final:.4f}"


def test_sft_masks_the_prompt_of_real_gsm8k_and_trains(data, tmp_path) -> None:
    from midmix.data import SftDataset, pad_examples
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
        assert labels.tolist() == ([-100] * len(prompt) + full[len(prompt):])[:256]
    # The loss is the mean over response tokens only, whatever the padding.
    from transformers import GPTNeoXForCausalLM

    model = CausalLM(GPTNeoXForCausalLM(neox_config("tiny")))
    batch = pad_examples([ds[i] for i in range(4)])
    with torch.no_grad():
        logits = model(batch)
        loss = float(model.loss(logits, batch))
        per_token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:],
                                                      reduction="none")
        scored = batch["labels"][:, 1:] != -100
        assert loss == pytest.approx(float(per_token[scored].mean()), rel=1e-5)
        assert float(shifted_loss(logits, batch["labels"], "sum")) == pytest.approx(float(per_token[scored].sum()),
                                                                                    rel=1e-5)
    r = recipe(data, tmp_path / "sft", duration="2ep", data={
        "train": {"path": str(data / "gsm8k"), "kind": "sft", "select": ":16"},
        "eval": {"gsm8k": {"path": str(data / "gsm8k"), "kind": "sft", "select": "560:", "max_samples": 8},
                 "general": {"path": str(data / "prose_val"), "max_samples": 8}},
        "global_batch_size": G, "eval_batch_size": 4},
        callbacks={"domain": {"eval": "gsm8k", "interval": "4ba"},
                   "forgetting": {"eval": "general", "interval": "4ba"}},
        checkpoint={"interval": None, "weights_only": True})
    summary = train(r)
    assert summary["steps"] == 2 * 16 // G
    lr = [v for *_, v in metrics(tmp_path / "sft")["lr-AdamW/group0"]]
    assert lr[-1] < 0.1 * max(lr)  # the cosine reaches its end within the epochs
    assert math.isfinite(summary["final"]["domain/loss"])


def test_sft_killed_mid_epoch_resumes_with_the_same_batches(data, tmp_path) -> None:
    """SFT reads a map-style set through Composer's sampler; a resume must land mid-epoch on the same order."""
    def sft(run_dir: Path) -> dict:  # 24 examples, 6 batches per epoch; the checkpoint at batch 7 is mid-epoch 2
        return recipe(data, run_dir, duration="2ep", data={
            "train": {"path": str(data / "gsm8k"), "kind": "sft", "select": ":24"},
            "eval": {"general": {"path": str(data / "prose_val"), "max_samples": 8}},
            "global_batch_size": G, "eval_batch_size": 4},
            callbacks={"forgetting": {"eval": "general", "interval": "3ba"}, "audit": True},
            checkpoint={"interval": "7ba"})

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

    for cfg in [ScheduleConfig(name="cosine", warmup=0.1),
                *(ScheduleConfig(name="wsd", warmup=0.1, decay_start=0.7, decay_shape=s)
                  for s in ("linear", "cosine", "sqrt"))]:
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
