"""The launchers of a grid's job graph (`jobs.py`): `serial` (this process, one job after another: see
`run.py`), `local` (N worker processes on this machine, one device each), `slurm` (see `slurm.py`).

Each job runs through `jobs.run_job` whatever the launcher, so the outputs are the same, the caches are
shared, and two launchers on one experiment directory build each output once (the other waits on its
lock, then finds it current). A worker process runs many jobs: torch and Composer are imported once per
worker, not once per run (a grid has ~300 runs of minutes each).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from midmix.errors import ConfigError, MidmixError
from midmix.experiment.grid import STAGES, Grid, load, smoke
from midmix.experiment.jobs import Job, graph, plan
from midmix.experiment.layout import Layout
from midmix.experiment.stamp import write_atomic


@dataclass
class LaunchSpec:
    """What a worker process needs to rebuild the launcher's grid (written as JSON for it)."""

    grid: str
    overrides: list[str] = field(default_factory=list)
    smoke: bool = False
    redo_stale: bool = False
    cwd: str = ""  # the grid's relative paths are relative to where the launcher ran

    def load_grid(self) -> Grid:
        grid = load(self.grid, self.overrides)
        return smoke(grid) if self.smoke else grid

    def write(self, path: Path) -> Path:
        write_atomic(path, json.dumps(asdict(self), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> LaunchSpec:
        return cls(**json.loads(Path(path).read_text()))


def describe(lay: Layout) -> str:
    """The job graph, stage by stage: jobs, what they wait for, how many are complete."""
    every = graph(lay)
    done = plan(lay, every)
    stage_of = {j.id: j.stage for j in every}
    lines = ["job graph (stage: jobs, complete; after):"]
    for stage in STAGES:
        jobs = [j for j in every if j.stage == stage]
        after = sorted({stage_of[d] for j in jobs for d in j.deps}, key=STAGES.index)
        lines.append(
            f"  {stage:<9} {len(jobs):>4} jobs, {sum(j.id in done for j in jobs):>4} complete"
            + (f"; after {', '.join(after)}" if after else "")
        )
    return "\n".join(lines)


def devices_for(lay: Layout, n: int) -> list[dict[str, str]]:
    """The environment of each of `n` workers: its own GPU when the grid trains on GPUs (one run per
    GPU: the study's models fit one)."""
    if lay.g.device != "cpu":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            ids = [d for d in visible.split(",") if d.strip()]
        else:
            import torch

            ids = [str(i) for i in range(torch.cuda.device_count())]
        if ids:
            if n > len(ids):
                raise ConfigError(f"--jobs {n}: one GPU per job, and {len(ids)} are visible ({','.join(ids)})")
            return [{"CUDA_VISIBLE_DEVICES": ids[i]} for i in range(n)]
        if lay.g.device == "cuda":
            raise ConfigError("the grid trains on cuda, but no GPU is visible")
    # CPU workers keep this process's thread count: torch's reductions (the losses in the tables) depend
    # on it in their last bits, and the tables are to be identical under every launcher.
    return [{} for _ in range(n)]


class Worker:
    """A `python -m midmix.experiment.worker SPEC` process: job ids in on stdin, one JSON status line
    out per job on stdout. It exits when stdin closes (also when this launcher dies)."""

    def __init__(self, index: int, spec_path: Path, env: dict[str, str], cwd: str) -> None:
        self.index = index
        self.job: Job | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "midmix.experiment.worker", str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
        )
        self.started = 0.0

    def send(self, job: Job) -> None:
        assert self.proc.stdin is not None
        self.job, self.started = job, time.perf_counter()
        self.proc.stdin.write(job.id + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()


def run_local(lay: Layout, spec: LaunchSpec, n: int) -> int:
    """Run the graph on `n` worker processes: each job as soon as its dependencies are complete."""
    if n < 1:
        raise ConfigError(f"--jobs {n}: at least 1")
    lay.out.mkdir(parents=True, exist_ok=True)
    jobs = graph(lay)
    finished = plan(lay, jobs)
    todo = [j for j in jobs if j.id not in finished]
    n = min(n, max(1, len(todo)))
    envs = devices_for(lay, n)
    lay.log(
        f"local launcher: {len(finished)} of {len(jobs)} jobs complete, {len(todo)} to run on {n} workers "
        f"(logs in {lay.out / 'logs'})"
    )
    spec_path = spec.write(lay.out / "launch" / f"local-{os.getpid()}.json")
    workers = [Worker(i, spec_path, envs[i], spec.cwd) for i in range(n)]
    sel = selectors.DefaultSelector()
    for w in workers:
        assert w.proc.stdout is not None
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
    failed: list[tuple[str, str]] = []
    total, t0 = len(todo), time.perf_counter()
    try:
        while True:
            if not failed:  # after a failure, let running jobs finish but start no more (as make does)
                for w in workers:
                    if w.job is None and w.proc.poll() is None:
                        ready = next((j for j in todo if all(d in finished for d in j.deps)), None)
                        if ready is None:
                            break
                        todo.remove(ready)
                        try:
                            w.send(ready)
                        except BrokenPipeError:  # it died before taking the job
                            failed.append((ready.id, f"worker exited with {w.proc.wait()} before it started"))
                            w.job = None
            busy = [w for w in workers if w.job is not None]
            if not busy:
                break
            for key, _ in sel.select():
                w = key.data
                line = w.proc.stdout.readline()
                job = w.job
                if not line:  # the worker died (killed, out of memory) during its job
                    sel.unregister(w.proc.stdout)
                    w.proc.wait()
                    failed.append((job.id, f"worker exited with {w.proc.returncode}; see {lay.log_path(job.id)}"))
                    w.job = None
                    continue
                status = json.loads(line)
                w.job = None
                if status["ok"]:
                    finished.add(job.id)
                    done = total - len(todo) - sum(x.job is not None for x in workers)
                    rate = (time.perf_counter() - t0) / max(done, 1)
                    eta = rate * (len(todo) + sum(x.job is not None for x in workers)) / n
                    lay.log(
                        f"[{done}/{total}] {job.id}: {status['result']} in {status['seconds']:.1f}s"
                        + (f" (ETA {eta / 60:.0f} min)" if todo else "")
                    )
                else:
                    failed.append((job.id, f"{status['error']} (log: {lay.log_path(job.id)})"))
                    lay.log(f"FAILED {job.id}: {status['error'].splitlines()[0]}")
    finally:
        for w in workers:
            w.close()
        for w in workers:
            try:
                w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
        spec_path.unlink(missing_ok=True)
    if todo and not failed:
        failed.append(("(workers)", "every worker process exited; see the log above"))
    if failed:
        raise ExperimentFailed(
            "\n  ".join([f"{len(failed)} job(s) failed, {len(todo)} not started:"] + [f"{j}: {e}" for j, e in failed])
        )
    lay.log(f"done: {total} jobs in {(time.perf_counter() - t0) / 60:.1f} min; tables in {lay.out / 'results'}")
    return 0


class ExperimentFailed(MidmixError):
    """Jobs of a launched grid failed; each is named with its log."""
