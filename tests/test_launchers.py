"""The grid's job graph under every launcher, and its caches keyed on inputs, on a micro grid of the
bundled demo data: `--launcher local` gives the serial run's tables, a killed launcher resumes without
redoing finished jobs, two launchers on one directory build each output once, and a changed corpus or
`seq_len` is never served from the old cache."""

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
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (fixtures are found by name)

pytest.importorskip("composer")

DEMO = ROOT / "demo" / "data"
RESULTS = ("tables.md", "sft.csv", "proximity.csv", "passes.csv")


def micro_grid(d: Path) -> Path:
    """1 mix at 1 start, 2 SFT targets × 2 learning rates: 22 jobs, about 40 s serially on 2 cores."""
    data = d / "data"
    shutil.copytree(DEMO, data)  # a copy: one test edits a corpus
    grid = {
        "name": "micro", "out": str(d / "serial"), "data_dir": str(data), "tokenizer": str(PYTHIA),
        "arch": "tiny", "device": "cpu", "seq_len": 32, "global_batch": 4, "steps": 12, "eval_samples": 8,
        "base": "prose.jsonl", "general_val": "prose_val.jsonl",
        "mixes": {"code": {"file": "code.jsonl.zst", "weight": 0.3}}, "starts": [0.5],
        "sft": {"targets": {"gsm8k": {"file": "gsm8k.jsonl", "train_examples": 8, "val_examples": 4},
                            "code": {"file": "code_val.jsonl", "train_examples": 8, "val_examples": 4,
                                     "mask_prompt": False}},
                "seeds": [1], "lrs": [1.0e-3, 3.0e-3], "epochs": 1, "seq_len": 64, "global_batch": 4},
        "proximity": {"max_docs": 50, "max_tokens_per_doc": 128},
    }
    # code_val.jsonl has one field; as an SFT target its first lines are the prompt.
    with open(data / "code_val.jsonl") as f, open(data / "code_sft.jsonl", "w") as out:
        for line in f.read().splitlines()[:40]:
            lines = json.loads(line)["text"].splitlines()
            out.write(json.dumps({"prompt": "\n".join(lines[:4]) + "\n",
                                  "response": "\n".join(lines[4:12]) or "pass"}) + "\n")
    grid["sft"]["targets"]["code"]["file"] = "code_sft.jsonl"
    path = d / "micro.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def launch(grid: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(grid.parent)}
    proc = subprocess.run([sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=grid.parent)
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
    proc = subprocess.Popen([sys.executable, "-m", "midmix.cli", "experiment", str(grid), f"out={out}",
                             "--launcher", "local", "--jobs", "2"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=grid.parent, start_new_session=True)
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
    assert "train/base" in first and len(first) < 21
    second = launch(grid, f"out={out}", "--launcher", "local", "--jobs", "2")
    again = built(second.stdout)
    assert not set(again) & set(first)  # nothing finished before the kill was built again
    assert len(set(first) | set(again)) == 22
    assert results(out) == want


def test_two_launchers_on_one_directory_build_each_output_once(serial) -> None:
    grid, want = serial
    out = grid.parent / "together"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(grid.parent)}
    cmd = [sys.executable, "-m", "midmix.cli", "experiment", str(grid), f"out={out}", "--launcher", "local",
           "--jobs", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=grid.parent) for _ in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    builds = [j for log in logs for j in built(log) if j != "tables"]
    assert len(builds) == len(set(builds)) == 21  # each output built by one of them; the other waited
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
    assert stale == {"prepare/sft-gsm8k", "stats/target-gsm8k", "tables",
                     *(j.id for j in exp.jobs if j.kind == "sft" and "/gsm8k/" in j.id)}

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


def test_a_failed_job_stops_the_local_launcher_naming_it_and_its_log(serial, tmp_path) -> None:
    grid, _ = serial
    out = tmp_path / "failed"
    proc = launch(grid, f"out={out}", "mixes.code.file=missing.jsonl", "--launcher", "local", "--jobs", "2",
                  check=False)
    assert proc.returncode == 1
    assert "prepare/code: ConfigError" in proc.stderr and "missing.jsonl: not found" in proc.stderr
    assert re.search(r"1 job\(s\) failed, 1\d not started", proc.stderr)  # no job starts after a failure
    assert str(out / "logs" / "prepare" / "code.log") in proc.stderr
    assert "Traceback" in (out / "logs" / "prepare" / "code.log").read_text()
    assert not (out / "stamps" / "mix").exists()  # nothing after the failed stage started


def test_a_failed_slurm_stage_cancels_what_depends_on_it(serial, slurm_cluster: SlurmCluster, tmp_path) -> None:  # noqa: F811
    grid, _ = serial
    out = tmp_path / "slurm-failed"
    args = [f"out={out}", "mixes.code.file=missing.jsonl", "--launcher", "slurm", "--wait", "--gpus-per-job", "0"]
    env = {**slurm_cluster.env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=grid.parent)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the Slurm jobs ended with 14 job(s) incomplete" in proc.stderr and "prepare/code (log:" in proc.stderr
    assert "missing.jsonl: not found" in (out / "logs" / "prepare" / "code.log").read_text()
    assert not (out / "stamps" / "mix").exists()  # the mixes' array was cancelled, never run
    assert (out / "stamps" / "prepare" / "base.json").exists()  # the data stage's other tasks ran


def test_a_second_slurm_submission_while_the_first_is_queued_is_refused(serial, slurm_cluster: SlurmCluster,  # noqa: F811
                                                                        tmp_path) -> None:
    grid, _ = serial
    out = tmp_path / "queued"
    # Held for a minute by sbatch_args, so it is certainly still queued when the second one comes.
    args = [f"out={out}", "slurm.sbatch_args=[--begin=now+60]", "--launcher", "slurm", "--gpus-per-job", "0"]
    env = {**slurm_cluster.env, "TMPDIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args], env=env,
                           capture_output=True, text=True, timeout=300, cwd=grid.parent)
    assert first.returncode == 0, first.stderr
    ids = json.loads((out / "slurm" / "queued.json").read_text())["job_ids"]
    assert len(ids) == 7
    assert all("#SBATCH --begin=now+60" in p.read_text() for p in (out / "slurm").glob("*/*.sbatch"))
    second = subprocess.run([sys.executable, "-m", "midmix.cli", "experiment", str(grid), *args], env=env,
                            capture_output=True, text=True, timeout=300, cwd=grid.parent)
    assert second.returncode == 1
    assert "still queued or running" in second.stderr and f"scancel {' '.join(sorted(ids))}" in second.stderr
    slurm_cluster.run("scancel", *ids)
