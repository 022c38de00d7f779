"""`midmix experiment` end to end on a micro grid of the bundled demo data: every stage runs, the
tables are computed from the runs' own summaries, and a re-run is served from the cache."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PYTHIA, ROOT, SHARED, needs_shared

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
        "name": "micro",
        "out": str(d / "out"),
        "data_dir": str(DEMO),
        "tokenizer": str(PYTHIA),
        "arch": "tiny",
        "device": "cpu",
        "seq_len": 32,
        "global_batch": 4,
        "steps": 12,
        "eval_samples": 8,
        "base": "prose.jsonl",
        "general_val": "prose_val.jsonl",
        "mixes": {
            "code": {"file": "code.jsonl.zst", "weight": 0.3},
            "valcode": {"file": "code_val.jsonl", "weight": 0.5},
        },
        "starts": [0.5],
        "controls": {"code": 0.75},
        "ablation": {"mix": "code", "target": "gsm8k", "starts": [0.25, 0.5], "weights": [0.3, 0.6]},
        "sft": {
            "targets": {
                "gsm8k": {"file": "gsm8k.jsonl", "mask_prompt": True, "train_examples": 8, "val_examples": 4},
                "code": {
                    "file": str(d / "code_sft.jsonl"),
                    "mask_prompt": False,
                    "train_examples": 8,
                    "val_examples": 4,
                },
            },
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
    log = run(path, d)
    return d / "out", path, log


def run(path: Path, d: Path) -> str:
    env = {**os.environ, "TMPDIR": str(d), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "experiment", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
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
            summary = json.loads(
                (out / "runs" / "sft" / row["model"] / row["target"] / f"seed1-lr{lr}" / "summary.json").read_text()
            )
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
    # Passes over each source come from each mix's own manifest; this grid reads nothing twice.
    passes = list(csv.DictReader(open(res / "passes.csv")))
    for row in passes:
        manifest = json.loads((out / "mixes" / row["mix"] / "midmix.json").read_text())
        assert float(row["passes"]) == pytest.approx(manifest["passes"][row["source"]], abs=1e-4)
        assert float(row["passes"]) < 1
    assert len({r["mix"] for r in passes}) == 1 + 6 and "No source was read more than once." in tables


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


def test_the_dry_run_estimate_counts_what_the_runs_trained(experiment) -> None:
    """--dry-run's tokens per stage against the finished runs' own summaries."""
    from midmix.experiment.estimate import estimate
    from midmix.experiment.grid import all_variants, branch_step, load
    from midmix.experiment.run import Experiment

    out, path, _ = experiment
    g = load(path)
    base, mid, sft = estimate(Experiment(g))
    summary = json.loads((out / "runs" / "base" / "summary.json").read_text())
    assert (base.runs, base.train_tokens) == (1, summary["tokens"])
    trained = 0
    for v in all_variants(g):  # a branch continues the base's clock: its own tokens start at the branch point
        s = json.loads((out / "runs" / v.name / "summary.json").read_text())
        trained += s["tokens"] - branch_step(g, v.start) * g.global_batch * g.seq_len
    assert (mid.runs, mid.train_tokens) == (len(all_variants(g)), trained)
    sft_runs = list((out / "runs" / "sft").rglob("summary.json"))
    assert sft.runs == len(sft_runs)
    # SFT counts padded tokens, what the GPU computes on; the runs count the scored ones.
    assert sft.train_tokens > sum(json.loads(p.read_text())["tokens"] for p in sft_runs)
    assert 0 < base.flops < mid.flops


def test_a_grid_asking_more_than_its_data_has_lists_every_shortfall_before_building(experiment, tmp_path) -> None:
    _, path, _ = experiment
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "midmix.cli",
            "experiment",
            str(path),
            f"out={tmp_path / 'o'}",
            "steps=100000",
            "sft.targets.gsm8k.train_examples=100000",
            "--dry-run",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    err = proc.stderr
    for mix in ["base", "code-w0.3-from0.5", "valcode-w0.5-from0.5", "code-w1-from0.75", "code-w0.6-from0.25"]:
        assert f"mix {mix}: needs" in err
    assert "sft.targets.gsm8k: train_examples 100000" in err and "on_exhaust: error (one pass)" in err
    assert not (tmp_path / "o" / "mixes").exists()  # refused before any mix was built


def test_repetition_is_a_grid_setting_keeps_the_base_prefix_and_is_reported(experiment, tmp_path) -> None:
    from midmix.experiment.grid import all_variants, branch_step, load
    from midmix.experiment.run import Experiment

    _, path, _ = experiment
    g = load(path, [f"out={tmp_path / 'o'}", "steps=3000", "on_exhaust=repeat", "max_repeat=3"])
    exp = Experiment(g)
    exp.prepare()
    exp.check_data()
    exp.build_mixes()
    base = read_mix_index(exp.mix_dir(None))
    base_passes = json.loads((exp.mix_dir(None) / "midmix.json").read_text())["passes"]["base"]
    assert 1 < base_passes <= 3
    for v in all_variants(g):
        head = branch_step(g, v.start) * g.global_batch
        here = read_mix_index(exp.mix_dir(v))
        assert here[0][:head].tolist() == base[0][:head].tolist()  # the base's stream until the branch
        assert here[1][:head].tolist() == base[1][:head].tolist()
    # A cap below what the grid needs is refused by the same check.
    low = Experiment(load(path, [f"out={tmp_path / 'o'}", "steps=3000", "on_exhaust=repeat", "max_repeat=2"]))
    from midmix.errors import ConfigError

    with pytest.raises(ConfigError, match="under max_repeat: 2"):
        low.check_data()


def read_mix_index(mix: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.fromfile(mix / "mix.source.u8", dtype=np.uint8), np.fromfile(mix / "mix.sample.u32", dtype="<u4")


GPU_GRIDS = [ROOT / "recipes" / "paper" / "gpu-70m.yaml", ROOT / "recipes" / "paper" / "gpu-160m.yaml"]


@pytest.fixture(scope="module")
def gpu_out(tmp_path_factory) -> Path:
    """One experiment directory for both GPU grids' dry-runs: they prepare the same corpora at the same
    sequence length, so the second reuses the first's data (the caches are keyed on inputs)."""
    return tmp_path_factory.mktemp("gpu-grids") / "o"


@pytest.mark.slow  # the slow tier (`make test-all`; the README says what each slow test protects)
@needs_shared()
@pytest.mark.parametrize("grid", GPU_GRIDS, ids=lambda p: p.stem)
def test_the_gpu_grids_fit_their_data_and_say_what_they_cost(grid: Path, gpu_out: Path, tmp_path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "midmix.cli",
            "experiment",
            str(grid),
            f"data_dir={SHARED}",
            f"out={gpu_out}",
            "--dry-run",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    text = proc.stdout
    assert "22 midtrained variants, 282 SFT runs" in text
    for stage in ["3. pretrain the base", "4. midtrain the variants", "5. SFT", "total"]:
        assert stage in text
    line = text.split("most passes over each source:")[1].split("\n")[0]
    passes = [float(x) for x in re.findall(r" (\d+\.\d+) \(", line)]
    assert len(passes) == 6 and max(passes) <= 4
    assert "job graph" in text and "sft        282 jobs" in text
    assert not (gpu_out / "runs").exists()  # nothing trained


@pytest.mark.slow  # the slow tier (`make test-all`; the README says what each slow test protects)
@needs_shared()
def test_the_gpu_grids_smoke_has_every_stage_and_fits_its_data(tmp_path) -> None:
    """`--smoke --dry-run` of the GPU grids: the smoke sizes' data check and job graph, without training.
    Every stage of a smoke grid runs end to end in test_launchers_cpu_grid.py (cpu.yaml, serially and on Slurm)."""
    from dataclasses import asdict

    from midmix.experiment.grid import all_variants, load, sft_jobs, smoke

    # At smoke size the two GPU grids are the same grid (they differ in model and steps only), so
    # checking one of them checks both.
    grid, other = GPU_GRIDS
    a, b = asdict(smoke(load(grid))), asdict(smoke(load(other)))
    assert {k for k in a if a[k] != b[k]} == {"name", "out"}
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "midmix.cli",
            "experiment",
            str(grid),
            f"data_dir={SHARED}",
            f"out={tmp_path / 'o'}",
            "--smoke",
            "--dry-run",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    g = smoke(load(grid, [f"data_dir={SHARED}", f"out={tmp_path / 'o'}"]))
    runs = len(sft_jobs(g)) * len(g.sft.seeds) * len(g.sft.lrs)
    assert f"{len(all_variants(g))} midtrained variants, {runs} SFT runs" in proc.stdout
    midtrain = rf"midtrain +{len(all_variants(g))} jobs, +0 complete; after data, mixes, base$"
    assert re.search(midtrain, proc.stdout, re.M)
    assert not (tmp_path / "o-smoke" / "runs").exists()


def test_an_sft_run_of_the_grid_keeps_its_weights_when_asked_and_exports(experiment, tmp_path) -> None:
    """sft.save_weights: the grid's SFT run keeps a weights-only final checkpoint that export-model takes."""
    from midmix.experiment.grid import load
    from midmix.experiment.run import Experiment
    from midmix.train.export import export_model

    _, path, _ = experiment
    exp = Experiment(load(path, ["sft.save_weights=true"]))
    recipe = exp.sft_recipe("base", "gsm8k", 1, 1e-3)
    recipe["run_dir"] = str(tmp_path / "sft")  # beside the grid's own runs, not over them
    summary = exp.train(recipe, "sft with weights")
    assert summary["completed"]
    exported = export_model(tmp_path / "sft", tmp_path / "hf")
    assert exported.step == summary["steps"] and (tmp_path / "hf" / "model.safetensors").exists()
