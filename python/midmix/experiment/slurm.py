"""`midmix experiment GRID --launcher slurm`: the job graph submitted to Slurm, one job array per stage.

Each stage's incomplete jobs become one `sbatch --array` (a task runs one job, or `slurm.runs_per_task`
training runs in sequence), chained with `--dependency=afterok:` on the arrays of the stages it reads
and `--kill-on-invalid-dep=yes`, so a failed task cancels what depends on it instead of leaving it
pending forever. Every task runs `python -m midmix.experiment.worker`, i.e. `jobs.run_job`: the same
caches and locks as the other launchers. Submitting again submits only what is not complete.

sbatch is called directly rather than through submitit: the batch scripts are plain files under
OUT/slurm/SUBMISSION/ that a user can read, edit and re-submit by hand, and no extra package is needed.
Data stages ask for CPUs only; the training stages ask for `gpus_per_job` GPUs (0 or 1) per task.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from midmix.errors import ConfigError
from midmix.experiment.grid import STAGES, SlurmSpec
from midmix.experiment.jobs import Job, graph, plan
from midmix.experiment.launch import ExperimentFailed, LaunchSpec
from midmix.experiment.layout import Layout
from midmix.experiment.stamp import write_atomic

TRAINING_STAGES = ("base", "midtrain", "sft")


def _slurm(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise ConfigError(f"--launcher slurm: {cmd[0]} is not on PATH (is this a Slurm login node?)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def queued() -> set[str]:
    """Job ids (an array's: its own id) that Slurm still has pending or running."""
    return {x.strip() for x in _slurm(["squeue", "-h", "-o", "%F"]).split() if x.strip()}


def script(
    lay: Layout,
    spec_path: Path,
    tasks_path: Path,
    stage: str,
    s: SlurmSpec,
    n_tasks: int,
    after: list[str],
    sub: Path,
    cwd: str,
) -> str:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=midmix-{lay.g.name}-{stage}",
        f"#SBATCH --array=0-{n_tasks - 1}" + (f"%{s.max_parallel}" if s.max_parallel else ""),
        f"#SBATCH --output={sub / 'logs' / stage}-%a.out",
        f"#SBATCH --chdir={cwd}",
        f"#SBATCH --cpus-per-task={s.cpus_per_job}",
        "#SBATCH --ntasks=1",
    ]
    for key, value in (
        ("partition", s.partition),
        ("account", s.account),
        ("qos", s.qos),
        ("mem", s.mem),
        ("time", s.stage_time.get(stage, s.time)),
    ):
        if value:
            lines.append(f"#SBATCH --{key}={value}")
    if stage in TRAINING_STAGES and s.gpus_per_job and lay.g.device != "cpu":
        lines.append(f"#SBATCH --gpus-per-task={s.gpus_per_job}")
    if after:
        lines += [f"#SBATCH --dependency=afterok:{':'.join(after)}", "#SBATCH --kill-on-invalid-dep=yes"]
    lines += [f"#SBATCH {a}" for a in s.sbatch_args]
    lines += [
        "# one task of this stage: its jobs are listed in the tasks file; each job logs to OUT/logs/",
        f"exec {shlex.quote(sys.executable)} -m midmix.experiment.worker {shlex.quote(str(spec_path))} "
        f'--tasks {shlex.quote(str(tasks_path))} --index "$SLURM_ARRAY_TASK_ID"',
    ]
    return "\n".join(lines) + "\n"


def submit(lay: Layout, spec: LaunchSpec, options: dict[str, Any], wait: bool = False, poll_s: float = 5.0) -> int:
    s = replace(lay.g.slurm, **options)
    record = lay.out / "slurm" / "queued.json"
    if record.exists():
        still = sorted(set(json.loads(record.read_text())["job_ids"]) & queued())
        if still:
            raise ConfigError(
                f"an earlier submission of this grid is still queued or running (Slurm jobs "
                f"{', '.join(still)}): wait for it, or `scancel {' '.join(still)}`, then submit again"
            )
    jobs = graph(lay)
    done = plan(lay, jobs)
    todo = [j for j in jobs if j.id not in done]
    lay.log(f"slurm launcher: {len(done)} of {len(jobs)} jobs complete, {len(todo)} to submit")
    if not todo:
        return 0
    submitted = time.time()
    sub = lay.out / "slurm" / time.strftime("%Y%m%d-%H%M%S")
    (sub / "logs").mkdir(parents=True, exist_ok=True)
    spec_path = spec.write(sub / "spec.json")
    stage_of = {j.id: j.stage for j in jobs}
    ids: dict[str, str] = {}
    for stage in STAGES:
        mine = [j for j in todo if j.stage == stage]
        if not mine:
            continue
        per = s.runs_per_task if stage in TRAINING_STAGES else 1
        tasks = [[j.id for j in mine[i : i + per]] for i in range(0, len(mine), per)]
        tasks_path = sub / f"{stage}.tasks.json"
        tasks_path.write_text(json.dumps(tasks, indent=1) + "\n")
        after = sorted({ids[stage_of[d]] for j in mine for d in j.deps if d not in done and stage_of[d] in ids})
        path = sub / f"{stage}.sbatch"
        path.write_text(script(lay, spec_path, tasks_path, stage, s, len(tasks), after, sub, spec.cwd))
        ids[stage] = _slurm(["sbatch", "--parsable", str(path)]).strip().split(";")[0]
        lay.log(
            f"  {stage:<9} job {ids[stage]}: {len(mine)} jobs in {len(tasks)} tasks"
            + (f", after {', '.join(after)}" if after else "")
        )
    write_atomic(record, json.dumps({"submission": str(sub), "job_ids": list(ids.values())}) + "\n")
    lay.log(
        f"submitted to Slurm: scripts and logs in {sub}, each job's log in {lay.out / 'logs'}; "
        f"`squeue -j {','.join(ids.values())}` shows them"
    )
    if not wait:
        return 0
    return wait_for(lay, set(ids.values()), poll_s, submitted)


def wait_for(lay: Layout, ids: set[str], poll_s: float, submitted: float) -> int:
    """Wait until Slurm has none of `ids` left, then say whether the grid is complete (the tables written
    by this submission, at or after `submitted`)."""
    last = None
    while left := ids & queued():
        if left != last:
            lay.log(f"slurm: waiting for {len(left)} of {len(ids)} stage arrays ({', '.join(sorted(left))})")
            last = left
        time.sleep(poll_s)
    jobs = graph(lay)
    done = plan(lay, jobs)
    missing: list[Job] = [j for j in jobs if j.id not in done and j.kind_spec.cached]
    tables = lay.out / "results" / "tables.md"
    if missing or not tables.exists() or tables.stat().st_mtime < submitted - 1:
        shown = [f"{j.id} (log: {lay.log_path(j.id)})" for j in missing[:20]]
        raise ExperimentFailed(
            f"the Slurm jobs ended with {len(missing)} job(s) incomplete:\n  "
            + "\n  ".join(shown)
            + "\nsubmit again to run what is incomplete (finished jobs are kept)"
        )
    lay.log(f"done: tables in {lay.out / 'results'}")
    return 0
