"""The one-node Slurm fixture works: array jobs run, and `--dependency=afterok:` holds a job back until
every task succeeded, or cancels it (`--kill-on-invalid-dep=yes`) when one fails."""

from __future__ import annotations

from pathlib import Path

from slurm_cluster import SlurmCluster

# Each array task leaves a done-file when it finishes; the dependent job copies whatever done-files
# exist when it starts, so its output shows what had finished before it ran.
TASK = """#!/bin/bash
sleep 1
[ "$SLURM_ARRAY_TASK_ID" = "{fail_task}" ] && exit 3
echo "task $SLURM_ARRAY_TASK_ID" > {d}/done.$SLURM_ARRAY_TASK_ID
"""
AFTER = """#!/bin/bash
cat {d}/done.* > {d}/after.txt
"""


def submit_pair(cluster: SlurmCluster, d: Path, fail_task: int) -> tuple[str, str]:
    d.mkdir()
    (d / "task.sh").write_text(TASK.format(d=d, fail_task=fail_task))
    (d / "after.sh").write_text(AFTER.format(d=d))
    common = ["-p", cluster.partition, "-n", "1", "-t", "5", "-D", str(d)]
    array = cluster.sbatch(*common, "--array=0-1", "-o", f"{d}/task_%a.out", str(d / "task.sh"))
    after = cluster.sbatch(
        *common, f"--dependency=afterok:{array}", "--kill-on-invalid-dep=yes", "-o", f"{d}/after.out",
        str(d / "after.sh"),
    )  # fmt: skip
    return array, after


def test_dependent_job_runs_after_the_array(slurm_cluster: SlurmCluster) -> None:
    d = slurm_cluster.dir / "ok"
    array, after = submit_pair(slurm_cluster, d, fail_task=-1)
    states = slurm_cluster.wait([array, after], timeout=60)
    assert (d / "after.txt").read_text().splitlines() == ["task 0", "task 1"], states
    assert states == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED", after: "COMPLETED"}


def test_dependent_job_is_cancelled_when_a_task_fails(slurm_cluster: SlurmCluster) -> None:
    d = slurm_cluster.dir / "fail"
    array, after = submit_pair(slurm_cluster, d, fail_task=1)
    states = slurm_cluster.wait([array, after], timeout=60)
    assert (d / "done.0").exists() and not (d / "done.1").exists(), states
    assert not (d / "after.txt").exists(), states
    assert states == {f"{array}_0": "COMPLETED", f"{array}_1": "FAILED", after: "CANCELLED"}
