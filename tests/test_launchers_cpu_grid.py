"""`recipes/paper/cpu.yaml --smoke` under `--launcher slurm` (a real one-node Slurm, see slurm_cluster.py)
gives the serial run's tables, file for file, and a second Slurm submission submits only what is not
complete. (`--launcher local` against serial is test_launchers.py's, on its micro grid of every stage.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED, needs_shared
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (fixtures are found by name)

pytest.importorskip("composer")
pytestmark = needs_shared()

GRID = ROOT / "recipes" / "paper" / "cpu.yaml"
RESULTS = ("tables.md", "sft.csv", "proximity.csv", "passes.csv", "ablation.csv")


def experiment(out: Path, *args: str, env: dict[str, str] | None = None) -> str:
    # One torch thread in both launchers: the tables are compared bit for bit (the thread count changes
    # a reduction's last bits), and two Slurm tasks on 2 cores then do not oversubscribe them.
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1", "TMPDIR": str(out.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "midmix.cli", "experiment", str(GRID), f"data_dir={SHARED}",
                           f"out={out}", "--smoke", *args], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc.stdout


def results(out: Path) -> dict[str, str]:
    res = Path(f"{out}-smoke") / "results"
    return {name: (res / name).read_text() for name in RESULTS if (res / name).exists()}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("cpu-grid") / "serial"
    experiment(out)
    want = results(out)
    assert {"tables.md", "sft.csv", "passes.csv"} <= set(want)
    return want


def test_slurm_launcher_gives_the_serial_tables(serial, slurm_cluster: SlurmCluster, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "slurm"
    # CPU tasks (no GPU on this cluster); 12 SFT runs per array task, so torch starts 3 times, not 35.
    args = ["--launcher", "slurm", "--wait", "--gpus-per-job", "0", "slurm.runs_per_task=12"]
    log = experiment(out, *args, env=slurm_cluster.env)
    assert results(out) == serial
    sub = next((Path(f"{out}-smoke") / "slurm").glob("2*"))
    scripts = {p.stem: p.read_text() for p in sub.glob("*.sbatch")}
    assert set(scripts) == {"data", "stats", "mixes", "base", "midtrain", "sft", "tables"}
    assert "--dependency" not in scripts["data"] and "afterok:" in scripts["sft"]
    assert "#SBATCH --array=0-2" in scripts["sft"]  # 35 runs in tasks of 12
    assert "jobs complete" in log
    # Submitting again submits only what is not complete: the tables, which are always recomputed.
    again = experiment(out, *args, env=slurm_cluster.env)
    assert "78 of 79 jobs complete, 1 to submit" in again and "tables    job" in again
    assert results(out) == serial
