"""The training path on one GPU: throughput, MFU, peak memory and the loader's overhead, compile off and on.

Run on a GPU machine: `.venv/bin/python benchmarks/gpu_check.py` (Pythia-160m, bf16, seq 2048, 200 steps of
16 sequences per run; under 6 minutes on one H100). `--smoke` runs the same four runs with the tiny model
on CPU in fp32 (a few steps; what the test suite runs, so the script cannot rot between GPU sessions).

Four runs of the same recipe, each a real `midmix.train` Trainer (model, optimizer, callbacks, loggers):
  1. fed by the midmix loader from an index mix (the product's path);
  2. fed one synthetic batch that is already on the device (no loader, no host→device copy);
  3., 4. the same two with `compile: true` (torch.compile through Composer).
Tokens/s is the mean of Composer's SpeedMonitor over the steps after the first `--skip` (start-up and
compilation excluded); MFU is SpeedMonitor's (the PaLM FLOPs of `CausalLM.flops_per_batch` over the
device's bf16 peak) where Composer knows the GPU, else computed the same way from `--peak-tflops`.
Loader overhead = 1 − tokens/s(loader) / tokens/s(synthetic); the goal is ≤ 2%. With more than one GPU a
2-process FSDP2 run of a few steps checks the multi-GPU path (`composer -n 2 -m midmix.train`).
Prints a table and writes it as JSON to `--out` (default: gpu_check.json in the working directory; null for
what a device cannot measure, e.g. MFU on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import midmix
import torch
from midmix.mixspec import Phase

ROOT = Path(__file__).resolve().parent.parent
PYTHIA = ROOT / "tests" / "fixtures" / "pythia.json"
CORPUS = [ROOT / "demo" / "data" / "prose.jsonl", ROOT / "demo" / "data" / "code.jsonl.zst"]


class SyntheticBatches:
    """One fixed batch, on the device already, forever: the model's speed with no loader at all."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __iter__(self):  # noqa: ANN204 (an endless generator of the same batch)
        while True:
            yield self.batch


def prepare_mix(work: Path, seq_len: int, samples: int) -> Path:
    """An index mix of the bundled demo corpora, repeated as often as `samples` needs (throughput does not
    care about repetition; the machine may have no other data)."""
    src = midmix.prepare("bench", CORPUS, tokenizer=PYTHIA, seq_len=seq_len, out=work / "data", register=False)
    passes = -(-samples // src.counts.samples) + 1
    midmix.build_mix(
        [Phase.samples(samples, {"bench": 1.0})],
        work / "mix",
        sources={"bench": work / "data"},
        seed=0,
        on_exhaust="repeat",
        max_repeat=max(passes, 2),
        register=False,
    )
    return work / "mix"


def recipe(a: argparse.Namespace, mix: Path, run_dir: Path, compile_model: bool) -> dict[str, Any]:
    return {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "seed": 1,
        "duration": f"{a.steps}ba",
        "device": a.device,
        "precision": a.precision,
        "compile": compile_model,
        "model": {"arch": a.arch},
        "data": {"train": {"path": str(mix), "num_workers": a.workers}, "global_batch_size": a.batch},
        "optimizer": {"lr": 3e-4},
        "schedule": {"name": "cosine", "warmup": 0.1, "min_lr": 3e-5},
        "checkpoint": {"enabled": False},
        "loggers": {"progress_bar": False, "console": False, "speed_window": a.window},
    }


def one_run(raw: dict[str, Any], synthetic: bool, skip: int, peak_flops: float | None) -> dict[str, float]:
    from composer.core import DataSpec
    from midmix.run_report import read_metrics
    from midmix.train.config import from_dict
    from midmix.train.run import build_trainer

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cfg = from_dict(raw)
    trainer = build_trainer(cfg, raw)
    t0 = time.perf_counter()
    if synthetic:
        first = next(iter(trainer.state.train_dataloader))
        device = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
        on_device = {"input_ids": first["input_ids"].to(device)}
        trainer.fit(
            train_dataloader=DataSpec(
                SyntheticBatches(on_device), get_num_tokens_in_batch=lambda b: int(b["input_ids"].numel())
            )
        )
    else:
        trainer.fit()
    wall = time.perf_counter() - t0
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    trainer.close()
    series = read_metrics(Path(raw["run_dir"]) / "metrics.jsonl")

    def mean_after(key: str) -> float:
        values = [v for step, _, v in series.get(key, []) if step is not None and step > skip]
        return sum(values) / len(values) if values else float("nan")

    flops = mean_after("throughput/device/flops_per_sec")
    mfu = mean_after("throughput/device/mfu")
    if mfu != mfu and peak_flops:  # nan: Composer does not know this device's peak
        mfu = flops / peak_flops
    return {
        "tokens_per_s": mean_after("throughput/tokens_per_sec"),
        "flops_per_s": flops,
        "mfu": mfu,
        "wall_s": wall,
        "peak_mem_gib": peak_mem,
    }


def fsdp_check(a: argparse.Namespace, mix: Path, work: Path) -> dict[str, Any]:
    """A few steps of 2-process FSDP2 through the real launcher (only with 2+ GPUs)."""
    run_dir = work / "fsdp2"
    raw = recipe(a, mix, run_dir, False)
    raw["duration"], raw["fsdp"] = "10ba", {"activation_checkpointing": True}
    path = work / "fsdp2.yaml"
    path.write_text(json.dumps(raw))
    composer = Path(sys.executable).parent / "composer"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(composer), "-n", "2", "-m", "midmix.train", str(path)], capture_output=True, text=True, timeout=300
    )
    ok = proc.returncode == 0 and (run_dir / "summary.json").exists()
    if not ok:
        print((proc.stdout + proc.stderr)[-3000:], file=sys.stderr)
    return {"ok": ok, "wall_s": round(time.perf_counter() - t0, 1)}


def _nan_to_null(x: Any) -> Any:
    """JSON has no NaN: a value that was not measured (MFU or memory on a CPU) is written as null."""
    if isinstance(x, dict):
        return {k: _nan_to_null(v) for k, v in x.items()}
    return None if isinstance(x, float) and x != x else x


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, a few steps (what the tests run)")
    p.add_argument("--arch", default="pythia-160m")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16, help="sequences per step (one GPU, no accumulation)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--skip", type=int, default=30, help="steps left out of the means (start-up, compilation)")
    p.add_argument("--window", type=int, default=10, help="SpeedMonitor window in batches")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes")
    p.add_argument("--no-compile", action="store_true", help="leave out the compile: true runs")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, where Composer does not know it")
    p.add_argument("--out", default="gpu_check.json")
    a = p.parse_args()
    a.device, a.precision = "auto", "auto"
    if a.smoke:
        a.arch, a.seq_len, a.batch, a.steps, a.skip, a.window, a.workers = "tiny", 128, 4, 12, 2, 2, 0
        a.device, a.precision = "cpu", "fp32"
    gpu = torch.cuda.is_available() and not a.smoke
    print(
        f"device: {torch.cuda.get_device_name(0) if gpu else 'cpu'}; {a.arch}, seq {a.seq_len}, batch {a.batch}, "
        f"{a.steps} steps per run, torch {torch.__version__}",
        flush=True,
    )

    results: dict[str, Any] = {
        "arch": a.arch,
        "seq_len": a.seq_len,
        "batch": a.batch,
        "steps": a.steps,
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="midmix-gpu-check-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("MIDMIX_CACHE_DIR", str(work / "cache"))
        mix = prepare_mix(work, a.seq_len, a.steps * a.batch + a.batch)
        for compile_model in (False,) if a.no_compile else (False, True):
            for synthetic in (False, True):
                name = f"{'synthetic' if synthetic else 'loader'}{'+compile' if compile_model else ''}"
                raw = recipe(a, mix, work / name, compile_model)
                r = one_run(raw, synthetic, a.skip, a.peak_tflops and a.peak_tflops * 1e12)
                results["runs"][name] = r
                print(
                    f"{name:<20} {r['tokens_per_s']:>12,.0f} tok/s  MFU {r['mfu']:.3f}  peak {r['peak_mem_gib']:.1f} "
                    f"GiB  {r['wall_s']:.0f} s",
                    flush=True,
                )
        from midmix.train.run import close_dist

        close_dist()
        runs = results["runs"]
        for suffix in ("", "+compile"):
            if f"loader{suffix}" in runs:
                overhead = 1 - runs[f"loader{suffix}"]["tokens_per_s"] / runs[f"synthetic{suffix}"]["tokens_per_s"]
                results[f"loader_overhead{suffix}"] = overhead
                print(f"loader overhead{suffix or ' (eager)'}: {overhead:+.2%} (goal ≤ 2%)")
        if gpu and torch.cuda.device_count() > 1:
            results["fsdp2"] = fsdp_check(a, mix, work)
            print(f"2-process FSDP2: {'ok' if results['fsdp2']['ok'] else 'FAILED'} in {results['fsdp2']['wall_s']} s")
    Path(a.out).write_text(json.dumps(_nan_to_null(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
