"""`midmix experiment` end to end on a micro grid of the bundled demo data: every stage runs, the
tables are computed from the runs' own summaries, and a re-run is served from the cache."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PYTHIA, ROOT

pytest.importorskip("composer")

DEMO = ROOT / "demo" / "data"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[Path, Path, str]:
    d = tmp_path_factory.mktemp("experiment")
    # A second SFT target: held-out code files as (first lines → rest) completion.
    with open(d / "code_sft.jsonl", "w") as f:
        for line in (DEMO / "code_val.jsonl").read_text().splitlines()[:40]:
            text = json.loads(line)["text"]
            head, rest = "\n".join(text.splitlines()[:4]) + "\n", "\n".join(text.splitlines()[4:12])
            f.write(json.dumps({"prompt": head, "response": rest or "pass"}) + "\n")
    grid = {
        "name": "micro", "out": str(d / "out"), "data_dir": str(DEMO), "tokenizer": str(PYTHIA),
        "arch": "tiny", "device": "cpu", "seq_len": 32, "global_batch": 4, "steps": 12, "eval_samples": 8,
        "base": "prose.jsonl", "general_val": "prose_val.jsonl",
        "mixes": {"code": {"file": "code.jsonl.zst", "weight": 0.3},
                  "valcode": {"file": "code_val.jsonl", "weight": 0.5}},
        "starts": [0.5], "controls": {"code": 0.75},
        "ablation": {"mix": "code", "target": "gsm8k", "starts": [0.25, 0.5], "weights": [0.3, 0.6]},
        "sft": {"targets": {"gsm8k": {"file": "gsm8k.jsonl", "mask_prompt": True, "train_examples": 8,
                                      "val_examples": 4},
                            "code": {"file": str(d / "code_sft.jsonl"), "mask_prompt": False, "train_examples": 8,
                                     "val_examples": 4}},
                "seeds": [1], "lrs": [1.0e-3, 3.0e-3], "epochs": 1, "seq_len": 64, "global_batch": 4},
        "proximity": {"max_docs": 50, "max_tokens_per_doc": 128},
    }
    path = d / "micro.yaml"
    path.write_text(yaml.safe_dump(grid))
    log = run(path, d)
    return d / "out", path, log


def run(path: Path, d: Path) -> str:
    env = {**os.environ, "TMPDIR": str(d), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "midmix.cli", "experiment", str(path)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc.stdout


def test_every_stage_ran_and_the_tables_come_from_the_runs(experiment) -> None:
    out, _, log = experiment
    res = out / "results"
    tables = (res / "tables.md").read_text()
    for model in ["base", "code-w0.3-from0.5", "valcode-w0.5-from0.5", "code-w1-from0.75"]:
        assert f"| {model} |" in tables
    # Branch points of every variant were saved by the base, and each variant branched from its own.
    base_ckpts = {p.name for p in (out / "runs" / "base" / "checkpoints").glob("ep*-ba*-rank0.pt")}
    assert {"ep0-ba3-rank0.pt", "ep0-ba6-rank0.pt", "ep0-ba9-rank0.pt"} <= base_ckpts
    # The kept learning rate is the one with the lowest validation loss, read back from the runs.
    rows = list(csv.DictReader(open(res / "sft.csv")))
    assert len(rows) == 4 * 2 + 3  # 4 models × 2 targets, plus 3 ablation-only cells on gsm8k
    for row in rows:
        losses = {}
        for lr in ("0.001", "0.003"):
            summary = json.loads((out / "runs" / "sft" / row["model"] / row["target"] / f"seed1-lr{lr}" /
                                  "summary.json").read_text())
            losses[float(lr)] = summary["final"]["domain/loss"]
        assert float(row["lr"]) == min(losses, key=losses.get)
        assert float(row["val_loss"]) == pytest.approx(min(losses.values()))
        assert math.isfinite(float(row["general_loss"]))
    # Pearson r of the proximity table is the correlation of its own columns.
    pa = list(csv.DictReader(open(res / "proximity.csv")))
    assert len(pa) == 4
    results = json.loads((res / "results.json").read_text())
    r = np.corrcoef([float(x["pa"]) for x in pa], [float(x["gain"]) for x in pa])[0, 1]
    assert results["pearson_r"] == pytest.approx(r)
    # Each gain is base − variant on the averaged validation losses.
    mean = results["mean"]
    for x in pa:
        variant = f"{x['mix']}-w{float(x['weight']):g}-from0.5"
        expected = mean[f"base|{x['target']}"]["val_loss"] - mean[f"{variant}|{x['target']}"]["val_loss"]
        assert float(x["gain"]) == pytest.approx(expected)
    assert np.array(results["ablation"]["gain"]).shape == (2, 2)
    assert (res / "ablation.png").stat().st_size > 5000
    assert "Pearson r(PA, gain)" in log


def test_a_rerun_is_served_from_the_cache_and_resumes_a_missing_run(experiment, tmp_path) -> None:
    out, path, _ = experiment
    before = (out / "results" / "tables.md").read_text()
    log = run(path, tmp_path)
    assert "steps in" not in log and "prepared" not in log and "built mix" not in log
    assert (out / "results" / "tables.md").read_text() == before
    victim = out / "runs" / "sft" / "base" / "code" / "seed1-lr0.001"
    (victim / "summary.json").unlink()
    log = run(path, tmp_path)
    assert log.count("steps in") == 1 and "code ← base seed 1 lr 0.001" in log
    assert (victim / "summary.json").exists()
