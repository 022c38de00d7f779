"""The grid's job graph under every launcher, and its caches keyed on inputs, on a micro grid of the
bundled demo data that has every stage: `--launcher local` and `--launcher slurm` (a real one-node
Slurm, see slurm_cluster.py) give the serial run's tables, a killed launcher resumes without redoing
finished jobs, two launchers on one directory build each output once, and a changed corpus or `seq_len`
is never served from the old cache. (Launcher equality is a property of the job graph and the caches,
not of the grid's size: the full `cpu.yaml --smoke` runs once, in test_launchers_cpu_grid.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import PYTHIA, ROOT
from slurm_cluster import SlurmCluster

pytest.importorskip("composer")

DEMO = ROOT / "demo" / "data"
RESULTS = ("tables.md", "sft.csv", "proximity.csv", "passes.csv")


# The micro grid's jobs: prepare 4 (base, general_val, code, sft-gsm8k), stats 3, mix 2, train 2,
# sft 4 (2 models × 1 target × 2 learning rates), tables 1.
JOBS = 16


def micro_grid(d: Path) -> Path:
    """1 mix at 1 start, 1 SFT target × 2 learning rates: every stage in 16 jobs, ~25 s serially on 2 cores."""
    data = d / "data"
    shutil.copytree(DEMO, data)  # a copy: one test edits a corpus
    grid = {
        "name": "micro",
        "out": str(d / "serial"),
        "data_dir": str(data),
        "tokenizer": str(PYTHIA),
        "arch": "tiny",
        "device": "cpu",
        "seq_len": 32,
        "global_batch": 4,
        "steps": 12,
        "eval_samples": 8,
        "base": "prose.jsonl",
        "general_val": "prose_val.jsonl",
        "mixes": {"code": {"file": "code.jsonl.zst", "weight": 0.3}},
        "starts": [0.5],
        "sft": {
            "targets": {"gsm8k": {"file": "gsm8k.jsonl", "train_examples": 8, "val_examples": 4}},
            "seeds": [1],
            "lrs": [1.0e-3, 3.0e-3],
            "epochs": 1,
            "seq_len": 64,
            "global_batch": 4,
        },
        "proximity": {"max_docs": 50, "max_tokens_per_doc": 128},
    }
    path = d / "micro.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def launch(grid: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(grid.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=grid.parent,
    )
    if check:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc


def results(out: Path) -> dict[str, str]:
    return {name: (out / "results" / name).read_text() for name in RESULTS}


def built(log: str) -> list[str]:
    """The jobs a local launcher's output says it built."""
    return re.findall(r"\] (\S+): built in", log)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    d = tmp_path_factory.mktemp("launchers")
    grid = micro_grid(d)
    launch(grid)
    return grid, results(d / "serial")


def test_the_local_launcher_gives_the_serial_tables(serial) -> None:
    grid, want = serial
    out = grid.parent / "local"
    proc = launch(grid, f"out={out}", "--launcher", "local", "--jobs", "2")
    assert results(out) == want
    from midmix.experiment.grid import load
    from midmix.experiment.run import Experiment

    jobs = Experiment(load(grid, [f"out={out}"])).jobs
    assert len(jobs) == JOBS
    assert sorted(built(proc.stdout)) == sorted(j.id for j in jobs)  # every job, each once
    assert (out / "logs" / "train" / "base.log").read_text().count("== ") == 1
    # A re-run finds every job current and builds nothing but the tables.
    again = launch(grid, f"out={out}", "--launcher", "local", "--jobs", "2")
    assert built(again.stdout) == ["tables"] and f"{len(jobs) - 1} of {len(jobs)} jobs complete" in again.stdout


def test_a_killed_launcher_resumes_without_redoing_finished_jobs(serial) -> None:
    grid, want = serial
    out = grid.parent / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(grid.parent)}
    log = open(grid.parent / "killed.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "midmix.cli",
            "experiment",
            str(grid),
            f"out={out}",
            "--launcher",
            "local",
            "--jobs",
            "2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=grid.parent,
        start_new_session=True,
    )
    # Kill the launcher and its workers (as a lost node or Ctrl-\ would) once SFT has begun.
    deadline = time.time() + 600
    sft = out / "stamps" / "sft"
    while time.time() < deadline and proc.poll() is None:
        if sft.exists() and len([p for p in sft.rglob("*.json") if json.loads(p.read_text())["complete"]]) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the grid finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    first = built((grid.parent / "killed.log").read_text())
    assert "train/base" in first and len(first) < JOBS - 1
    second = launch(grid, f"out={out}", "--launcher", "local", "--jobs", "2")
    again = built(second.stdout)
    assert not set(again) & set(first)  # nothing finished before the kill was built again
    assert len(set(first) | set(again)) == JOBS
    assert results(out) == want


def test_two_launchers_on_one_directory_build_each_output_once(serial) -> None:
    grid, want = serial
    out = grid.parent / "together"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(grid.parent)}
    cmd = [
        sys.executable,
        "-m",
        "midmix.cli",
        "experiment",
        str(grid),
        f"out={out}",
        "--launcher",
        "local",
        "--jobs",
        "1",
    ]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=grid.parent)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    builds = [j for log in logs for j in built(log) if j != "tables"]
    assert len(builds) == len(set(builds)) == JOBS - 1  # each output built by one of them; the other waited
    assert all(built(log)[-1] == "tables" for log in logs)
    assert results(out) == want


def test_a_changed_corpus_or_seq_len_is_not_served_from_the_cache(serial, tmp_path) -> None:
    from midmix.experiment.grid import load
    from midmix.experiment.jobs import plan
    from midmix.experiment.run import Experiment

    grid, _ = serial
    out, data = tmp_path / "copy", tmp_path / "data"
    shutil.copytree(grid.parent / "serial", out)  # a moved experiment and moved corpora keep their cache
    shutil.copytree(grid.parent / "data", data)
    where = [f"out={out}", f"data_dir={data}"]
    exp = Experiment(load(grid, where))
    assert plan(exp, exp.jobs) == {j.id for j in exp.jobs if j.kind != "tables"}

    # Touching a corpus changes its mtime, not its contents: still current.
    gsm8k = data / "gsm8k.jsonl"
    os.utime(gsm8k, (time.time() + 5, time.time() + 5))
    assert len(plan(exp, exp.jobs)) == len(exp.jobs) - 1
    # Editing it invalidates what read it, and only that.
    with open(gsm8k, "a") as f:
        f.write(json.dumps({"prompt": "What is 2 + 2?", "response": "4"}) + "\n")
    stale = {j.id for j in exp.jobs} - plan(exp, exp.jobs)
    assert stale == {
        "prepare/sft-gsm8k",
        "stats/target-gsm8k",
        "tables",
        *(j.id for j in exp.jobs if j.kind == "sft" and "/gsm8k/" in j.id),
    }

    # seq_len: the data and the mixes are rebuilt; the runs trained on the old ones are refused, by name.
    proc = launch(grid, *where, "seq_len=48", check=False)
    assert proc.returncode == 1
    assert "rebuilding prepare/base: options.seq_len: 32 → 48" in proc.stdout
    assert "rebuilding mix/base: upstream.prepare/base" in proc.stdout
    assert "train/base:" in proc.stderr and "upstream.mix/base" in proc.stderr and "--redo-stale" in proc.stderr
    assert json.loads((out / "data" / "base" / "midmix.json").read_text())["seq_len"] == 48
    summary = json.loads((out / "runs" / "base" / "summary.json").read_text())
    # --redo-stale retrains them on the new data and moves the old runs aside.
    launch(grid, *where, "seq_len=48", "--redo-stale")
    new = json.loads((out / "runs" / "base" / "summary.json").read_text())
    assert new["tokens"] == summary["tokens"] * 48 // 32
    assert {p.name.split("-2")[0] for p in (out / "stale").iterdir()} >= {"train~base", "train~code-w0.3-from0.5"}


@pytest.mark.slow  # the slow tier (`make test-all`; the README says what each slow test protects)
def test_a_failed_job_stops_the_local_launcher_naming_it_and_its_log(serial, tmp_path) -> None:
    grid, _ = serial
    out = tmp_path / "failed"
    proc = launch(
        grid, f"out={out}", "mixes.code.file=missing.jsonl", "--launcher", "local", "--jobs", "2", check=False
    )
    assert proc.returncode == 1
    assert "prepare/code: ConfigError" in proc.stderr and "missing.jsonl: not found" in proc.stderr
    # No job starts after a failure: at most the other data and stats jobs (6) ran beside it.
    not_started = re.search(r"1 job\(s\) failed, (\d+) not started", proc.stderr)
    assert not_started and JOBS - 1 - 6 <= int(not_started[1]) <= JOBS - 1, proc.stderr
    assert str(out / "logs" / "prepare" / "code.log") in proc.stderr
    assert "Traceback" in (out / "logs" / "prepare" / "code.log").read_text()
    assert not (out / "stamps" / "mix").exists()  # nothing after the failed stage started


def test_the_slurm_launcher_gives_the_serial_tables(serial, slurm_cluster: SlurmCluster, tmp_path) -> None:
    grid, want = serial
    out = tmp_path / "slurm"
    # CPU tasks (no GPU on this cluster); 3 SFT runs per array task, so the 4 runs take 2 tasks.
    args = [f"out={out}", "--launcher", "slurm", "--wait", "--gpus-per-job", "0", "slurm.runs_per_task=3"]
    env = {**slurm_cluster.env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}

    def submit() -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            cwd=grid.parent,
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        return proc.stdout

    log = submit()
    assert results(out) == want
    sub = next((out / "slurm").glob("2*"))
    scripts = {p.stem: p.read_text() for p in sub.glob("*.sbatch")}
    assert set(scripts) == {"data", "stats", "mixes", "base", "midtrain", "sft", "tables"}
    assert "--dependency" not in scripts["data"] and "afterok:" in scripts["sft"]
    assert "#SBATCH --array=0-1" in scripts["sft"]  # 4 runs in tasks of 3
    assert "jobs complete" in log
    # Submitting again submits only what is not complete: the tables, which are always recomputed.
    again = submit()
    assert f"{JOBS - 1} of {JOBS} jobs complete, 1 to submit" in again and "tables    job" in again
    assert results(out) == want


@pytest.mark.slow  # the slow tier (`make test-all`; the README says what each slow test protects)
def test_a_failed_slurm_stage_cancels_what_depends_on_it(serial, slurm_cluster: SlurmCluster, tmp_path) -> None:
    grid, _ = serial
    out = tmp_path / "slurm-failed"
    args = [f"out={out}", "mixes.code.file=missing.jsonl", "--launcher", "slurm", "--wait", "--gpus-per-job", "0"]
    env = {**slurm_cluster.env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=grid.parent,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # prepare/code and all that waits for it (mixes, runs, SFT, tables); the other data and stats jobs ran.
    assert "the Slurm jobs ended with 10 job(s) incomplete" in proc.stderr and "prepare/code (log:" in proc.stderr
    assert "missing.jsonl: not found" in (out / "logs" / "prepare" / "code.log").read_text()
    assert not (out / "stamps" / "mix").exists()  # the mixes' array was cancelled, never run
    assert (out / "stamps" / "prepare" / "base.json").exists()  # the data stage's other tasks ran


def test_a_second_slurm_submission_while_the_first_is_queued_is_refused(
    serial, slurm_cluster: SlurmCluster, tmp_path
) -> None:
    grid, _ = serial
    out = tmp_path / "queued"
    # Held for a minute by sbatch_args, so it is certainly still queued when the second one comes.
    args = [f"out={out}", "slurm.sbatch_args=[--begin=now+60]", "--launcher", "slurm", "--gpus-per-job", "0"]
    env = {**slurm_cluster.env, "TMPDIR": str(tmp_path)}
    first = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=grid.parent,
    )
    assert first.returncode == 0, first.stderr
    ids = json.loads((out / "slurm" / "queued.json").read_text())["job_ids"]
    assert len(ids) == 7
    assert all("#SBATCH --begin=now+60" in p.read_text() for p in (out / "slurm").glob("*/*.sbatch"))
    second = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=grid.parent,
    )
    assert second.returncode == 1
    assert "still queued or running" in second.stderr and f"scancel {' '.join(sorted(ids))}" in second.stderr
    slurm_cluster.run("scancel", *ids)
