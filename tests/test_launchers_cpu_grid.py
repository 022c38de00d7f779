"""`recipes/paper/cpu.yaml --smoke`, the shipped grid at toy sizes, runs end to end on the shared corpora
(under `--launcher local --jobs 2`) and its tables cover every model × target, the proximity pairs, the
passes and the ablation. That every launcher gives the serial run's tables file for file is a property of
the job graph and the caches, proved in test_launchers.py on a micro grid with every stage."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, needs_shared

pytest.importorskip("composer")
pytestmark = needs_shared()

GRID = ROOT / "recipes" / "paper" / "cpu.yaml"


def test_the_cpu_grid_smoke_runs_every_stage_and_fills_every_table(tmp_path) -> None:
    from midmix.experiment.grid import all_variants, load, sft_jobs, smoke, table_models

    out = tmp_path / "cpu"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    args = [f"data_dir={SHARED}", f"out={out}"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "midmix.cli",
            "experiment",
            str(GRID),
            *args,
            "--smoke",
            "--launcher",
            "local",
            "--jobs",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    g = smoke(load(GRID, args))
    res = Path(f"{out}-smoke") / "results"
    from midmix.experiment.run import Experiment

    jobs = len(Experiment(g).jobs)
    assert f"0 of {jobs} jobs complete, {jobs} to run on 2 workers" in proc.stdout
    assert f"done: {jobs} jobs in" in proc.stdout
    # One row per (model, target) the grid trains, each with finite losses.
    rows = list(csv.DictReader(open(res / "sft.csv")))
    assert sorted((r["model"], r["target"]) for r in rows) == sorted(sft_jobs(g))
    assert all(float(r["val_loss"]) > 0 and float(r["general_loss"]) > 0 for r in rows)
    tables = (res / "tables.md").read_text()
    for model in table_models(g):
        assert f"| {model} |" in tables
    assert len(list(csv.DictReader(open(res / "proximity.csv")))) == len(g.mixes) * len(g.sft.targets)
    assert {r["mix"] for r in csv.DictReader(open(res / "passes.csv"))} == {"base", *(v.name for v in all_variants(g))}
    assert (res / "ablation.csv").exists() and (res / "ablation.png").stat().st_size > 5000
