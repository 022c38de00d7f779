"""Experiment trackers, offline: one tiny CPU run logs to W&B (offline run files) and MLflow (a file
store) through Composer's loggers, and, rewound to its checkpoint and resumed, logs into the same W&B
run id and the same MLflow run; the midmix metrics.jsonl is written all the same."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # the slow tier (`make test-all`; the README says what each slow test protects)
pytest.importorskip("composer")
wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")

from trainutil import metrics, recipe, rewind, train, wandb_offline_run  # noqa: E402

STEPS, CHECKPOINT = 8, 4
MLFLOW_EXPERIMENT = "midmix-tests"


@pytest.fixture(scope="module")
def data(train_data: Path) -> Path:
    return train_data  # the session's prepared sources and mixes (conftest.train_data)


@pytest.fixture(scope="module")
def tracked(data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tracked")
    uri = f"file:{root / 'mlruns'}"
    r = recipe(
        data,
        root / "run",
        duration=f"{STEPS}ba",
        checkpoint={"interval": f"{CHECKPOINT}ba"},
        loggers={
            "progress_bar": False,
            "console_interval": "100ba",
            "speed_window": 2,
            "wandb": {"project": "midmix-tests", "mode": "offline", "tags": ["tiny", "cpu"]},
            "mlflow": {"tracking_uri": uri, "experiment_name": MLFLOW_EXPERIMENT, "log_system_metrics": False},
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        # Nothing leaves the machine, and nothing is written outside the test's directories.
        mp.setenv("WANDB_MODE", "offline")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(root / "wandb-home"))
        for var in ("WANDB_DIR", "WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            mp.delenv(var, raising=False)
        train(r)
        first = (root / "run" / "wandb-run-id").read_text().strip()
        full = metrics(root / "run")
        rewind(root / "run", CHECKPOINT)
        train(r)
    return {"run_dir": root / "run", "uri": uri, "first_id": first, "uninterrupted": full}


def wandb_runs(run_dir: Path) -> list[dict]:
    """The offline runs under run_dir/wandb (the default dir), oldest first."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    return [wandb_offline_run(f) for f in files]


def test_wandb_offline_files_carry_the_runs_metrics_and_recipe(tracked) -> None:
    runs = wandb_runs(tracked["run_dir"])
    assert len(runs) == 2  # the first start and the resume
    jsonl = metrics(tracked["run_dir"])
    first, resumed = runs
    # Every step's training loss reached W&B, equal to the JSONL log's (both take the same float).
    losses = {
        s: row["loss/train/total"] for run in runs for s, row in run["history"].items() if "loss/train/total" in row
    }
    assert sorted(losses) == list(range(STEPS))
    for step, _, value in jsonl["loss/train/total"]:
        assert losses[step] == pytest.approx(value, rel=1e-6), step
    # SpeedMonitor's throughput (a 2-batch window), from both parts of the run.
    for run in runs:
        tps = [
            row["throughput/tokens_per_sec"] for row in run["history"].values() if "throughput/tokens_per_sec" in row
        ]
        assert tps and all(v > 0 and math.isfinite(v) for v in tps)
    assert any("throughput/device/flops_per_sec" in row for row in resumed["history"].values())
    # The resumed part starts after the checkpoint.
    assert min(s for s, row in resumed["history"].items() if "loss/train/total" in row) == CHECKPOINT
    # The resolved recipe, defaults included, is the run's config (logged once, at the fresh start).
    config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in first["config"].items()}
    assert config["optimizer.lr"] == pytest.approx(3e-3)
    assert config["data.global_batch_size"] == 4 and config["schedule.min_lr"] == pytest.approx(1e-6)
    assert config["loggers.wandb.tags"] == "['tiny', 'cpu']"


def test_a_resumed_run_logs_into_the_same_tracker_runs(tracked, monkeypatch) -> None:
    runs = wandb_runs(tracked["run_dir"])
    assert runs[0]["id"] == runs[1]["id"] == tracked["first_id"]  # kept in run_dir/wandb-run-id
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracked["uri"])
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    found = client.search_runs([experiment.experiment_id])
    assert len(found) == 1, [r.info.run_name for r in found]
    run = found[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    history = client.get_metric_history(run.info.run_id, "loss/train/total")
    by_step: dict[int, list[float]] = {}
    for m in history:
        by_step.setdefault(m.step, []).append(m.value)
    assert sorted(by_step) == list(range(STEPS))
    # Steps after the checkpoint were logged twice, before the rewind and after the resume: the same
    # values, since the resume continues exactly.
    jsonl = {s: v for s, _, v in metrics(tracked["run_dir"])["loss/train/total"]}
    for step, values in by_step.items():
        assert len(values) == (2 if step >= CHECKPOINT else 1), step
        assert values == pytest.approx([jsonl[step]] * len(values), rel=1e-6), step
    for key in ("throughput/tokens_per_sec", "throughput/samples_per_sec", "lr-AdamW/group0"):
        assert key in run.data.metrics, key
    assert run.data.params["optimizer.lr"] == "0.003" and run.data.params["model.arch"] == "tiny"


def test_the_jsonl_log_is_still_written(tracked) -> None:
    jsonl = metrics(tracked["run_dir"])
    assert [s for s, _, _ in jsonl["loss/train/total"]] == list(range(STEPS))
    again = {s: v for s, _, v in jsonl["loss/train/total"]}
    before = {s: v for s, _, v in tracked["uninterrupted"]["loss/train/total"]}
    assert again == pytest.approx(before, rel=1e-6)
    summary = json.loads((tracked["run_dir"] / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == STEPS


def test_tracker_recipe_errors_name_the_key(tmp_path, monkeypatch) -> None:
    import midmix
    from midmix.train import config

    base = {"data": {"train": {"path": "x"}}}
    for key, section in (("wandb", {}), ("mlflow", {"tracking_uri": "file:/x"})):
        with monkeypatch.context() as mp:
            mp.setitem(sys.modules, key, None)  # what `import` and find_spec see for a missing package
            with pytest.raises(
                midmix.ConfigError,
                match=rf"loggers\.{key}: needs the {key} package, which is not "
                r"installed \(pip install 'midmix\[track\]'",
            ):
                config.from_dict({**base, "loggers": {key: section}})
    # mlflow-skinny has no database store: mlflow's own default (sqlite) needs the full package.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    databases = [{"tracking_uri": "postgresql+psycopg2://db/mlflow"}]
    if mlflow.get_tracking_uri().startswith("sqlite:"):  # mlflow 3's default store (2's was ./mlruns)
        databases.append({})
    for section in databases:
        with pytest.raises(
            midmix.ConfigError,
            match=r"loggers\.mlflow\.tracking_uri: (postgresql|sqlite).* is a "
            r"database, which needs the full mlflow package "
            r"\(pip install mlflow\)",
        ):
            config.from_dict({**base, "loggers": {"mlflow": section}})
    config.from_dict({**base, "loggers": {"mlflow": {"tracking_uri": "http://tracking:5000"}}})
    with pytest.raises(midmix.ConfigError, match=r"loggers\.wandb\.mode: 'cloud' is not one of online, offline"):
        config.from_dict({**base, "loggers": {"wandb": {"mode": "cloud"}}})
    # A null logger is off.
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**base, "loggers": {"wandb": None, "mlflow": None}}))
    cfg, _ = config.load(tmp_path / "r.yaml")
    assert cfg.loggers.wandb is None and cfg.loggers.mlflow is None
