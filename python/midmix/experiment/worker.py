"""A worker process of the `local` and `slurm` launchers: runs grid jobs through `jobs.run_job`.

    python -m midmix.experiment.worker SPEC.json                    job ids on stdin (local launcher)
    python -m midmix.experiment.worker SPEC.json --tasks T --index I  the jobs of task I of T (a Slurm array)

Each job's output (this process's stdout and stderr, the Rust core's included) goes to OUT/logs/JOB.log;
one JSON status line per job goes to the original stdout. A failed job does not stop the others of a
task; the exit status is 1 if any failed, so Slurm's `afterok` holds the stages after it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from midmix.experiment.jobs import run_job
from midmix.experiment.launch import LaunchSpec
from midmix.experiment.run import Experiment


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send fds 1 and 2 (Python's, Rust's and subprocesses' output) to `path` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def serve(spec: LaunchSpec, ids: Iterable[str], status: TextIO) -> int:
    exp = Experiment.from_spec(spec)
    failures = 0
    for line in ids:
        job_id = line.strip()
        if not job_id:
            continue
        t = time.perf_counter()
        with output_to(exp.log_path(job_id)):
            try:
                print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {job_id} (pid {os.getpid()})", flush=True)
                result = run_job(exp, exp.job(job_id), spec.redo_stale)
                out = {"job": job_id, "ok": True, "result": result}
            except Exception as e:  # reported to the launcher; the traceback stays in the job's log
                traceback.print_exc()
                failures += 1
                out = {"job": job_id, "ok": False, "error": f"{type(e).__name__}: {e}"}
        out["seconds"] = time.perf_counter() - t
        status.write(json.dumps(out) + "\n")
        status.flush()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m midmix.experiment.worker")
    p.add_argument("spec", type=Path)
    p.add_argument("--tasks", type=Path, help="JSON list of job-id lists, one per array task")
    p.add_argument("--index", type=int, help="which task of --tasks (Slurm: $SLURM_ARRAY_TASK_ID)")
    a = p.parse_args(argv)
    spec = LaunchSpec.read(a.spec)
    status = os.fdopen(os.dup(1), "w", buffering=1)
    try:
        if a.tasks is not None:
            ids = json.loads(a.tasks.read_text())[a.index]
            return serve(spec, ids, status)
        return serve(spec, sys.stdin, status)
    finally:
        if "midmix.train.run" in sys.modules:  # a data-only task never imported torch; do not start now
            from midmix.train.run import close_dist

            close_dist()


if __name__ == "__main__":
    sys.exit(main())
