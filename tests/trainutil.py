"""Helpers for training tests: tiny CPU recipes over the bundled demo data, training them in a fresh
process (`midmix train`, or `composer -n N -m midmix.train`), what a run logged, a finished run put back
to an earlier checkpoint, and W&B's offline run files read straight from their format.

The prepared data and the runs that several modules read are built once per test session
(`conftest.train_data`, `conftest.tiny_runs`); a test that changes a run works on a copy (`copy_run`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "data"
PYTHIA = Path(__file__).resolve().parent / "fixtures" / "pythia.json"
# The tiny runs: global batch, sequence length, steps, and the step the branch starts from.
G, SEQ, STEPS, BRANCH = 4, 64, 16, 8


def prepare_train_data(d: Path) -> None:
    """The demo sources, their held-out sets and GSM8K (SFT) prepared under `d`, and two mixes over G·STEPS
    samples: `base-mix` (prose only) and `code-mix` (prose, then a ramp to half code)."""
    import midmix
    from conftest import mix_of

    for name, src in [
        ("prose", "prose.jsonl"),
        ("code", "code.jsonl.zst"),
        ("prose_val", "prose_val.jsonl"),
        ("code_val", "code_val.jsonl"),
    ]:
        midmix.prepare(name, [str(DEMO / src)], tokenizer=PYTHIA, seq_len=SEQ, out=d / name, register=False)
    midmix.prepare(
        "gsm8k", [str(DEMO / "gsm8k.jsonl")], tokenizer=PYTHIA, seq_len=256, out=d / "gsm8k", mode="sft", register=False
    )
    sources = [("prose", str(d / "prose")), ("code", str(d / "code"))]
    half = STEPS * G // 2
    mix_of(
        sources[:1], [("samples", STEPS * G, [("prose", 1.0)], False)], d / "base-mix", global_batch=G, register=False
    )
    mix_of(
        sources,
        [("samples", half, [("prose", 1.0)], False), ("samples", half, [("prose", 0.5), ("code", 0.5)], True)],
        d / "code-mix",
        global_batch=G,
        register=False,
    )


def recipe(datadir: Path, run_dir: Path, **changes: Any) -> dict:
    """The tiny recipe over `datadir`'s code-mix, with `changes` (`a__b=v` sets key a.b)."""
    r: dict[str, Any] = {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "seed": 5,
        "duration": f"{STEPS}ba",
        "model": {"arch": "tiny"},
        "data": {
            "train": {"path": str(datadir / "code-mix")},
            "eval": {
                "general": {"path": str(datadir / "prose_val"), "max_samples": 16},
                "code": {"path": str(datadir / "code_val"), "max_samples": 16},
            },
            "global_batch_size": G,
            "eval_batch_size": 8,
        },
        "optimizer": {"lr": 3e-3},
        "schedule": {"name": "cosine", "warmup": 0.25},
        "callbacks": {
            "forgetting": {"eval": "general", "interval": "4ba"},
            "domain": {"eval": "code", "interval": "4ba"},
            "mixture": {"interval": "4ba"},
            "audit": True,
        },
        "loggers": {"progress_bar": False, "console_interval": "100ba", "speed_window": 4},
        "checkpoint": {"interval": "4ba"},
    }
    for key, value in changes.items():
        node = r
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(path: Path, ranks: int) -> list[str]:
    if ranks == 1:  # `midmix train`, the one-process entry point
        return [sys.executable, "-m", "midmix.cli", "train", str(path)]
    launcher = Path(sys.executable).parent / "composer"
    return [str(launcher), "-n", str(ranks), "--master_port", str(free_port()), "-m", "midmix.train", str(path)]


def recipe_path(run_dir: Path) -> Path:
    """Where `start` writes a run's recipe: beside its run directory."""
    return run_dir.parent / f"{run_dir.name}.yaml"


def start(r: dict, ranks: int = 1) -> subprocess.Popen:
    run_dir = Path(r["run_dir"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = recipe_path(run_dir)
    path.write_text(yaml.safe_dump(r))
    tmp = run_dir.parent / f"{run_dir.name}.tmp"  # streaming leaves lock files in TMPDIR: one per run
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command(path, ranks), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def train(r: dict, ranks: int = 1) -> dict:
    proc = start(r, ranks)
    out, _ = proc.communicate(timeout=900)
    summary = Path(r["run_dir"]) / "summary.json"
    # The composer launcher can exit 0 when a rank fails: the run's own completion record decides.
    assert proc.returncode == 0 and summary.exists(), out[-4000:]
    return json.loads(summary.read_text())


def kill_after_first_checkpoint(r: dict) -> None:
    """Start the run and SIGKILL it as soon as its first checkpoint is on disk."""
    run_dir = Path(r["run_dir"])
    proc = start(r)
    latest = run_dir / "checkpoints" / "latest-rank0.pt"
    deadline = time.time() + 600
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"


def audit(run_dir: Path, rank: int = 0) -> dict[int, dict]:
    steps = {}
    for line in (run_dir / f"audit-rank{rank}.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps[record["step"]] = record  # after a resume, the later line wins
    return steps


def metrics(run_dir: Path) -> dict[str, list[tuple[int, int, float]]]:
    from midmix.run_report import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


def copy_run(run_dir: Path, to: Path) -> Path:
    """A copy of a finished run (checkpoint links kept as links) to change or resume without touching the
    session's shared one; its recipe's run_dir is `to`."""
    shutil.copytree(run_dir, to, symlinks=True)
    r = yaml.safe_load(recipe_path(run_dir).read_text())
    r["run_dir"], r["run_name"] = str(to), to.name
    recipe_path(to).write_text(yaml.safe_dump(r))
    config = to / "config.yaml"  # the recipe the run records, which a re-run compares with its own
    recorded = yaml.safe_load(config.read_text())
    recorded["run_dir"], recorded["run_name"] = str(to), to.name
    config.write_text(yaml.safe_dump(recorded, sort_keys=False))
    return to


def recipe_of(run_dir: Path) -> dict:
    return yaml.safe_load(recipe_path(run_dir).read_text())


def rewind(run_dir: Path, step: int) -> None:
    """Make a completed run look as if it had stopped right after its checkpoint at `step`: the later
    checkpoints and summary.json go, `latest-rank0.pt` links to that checkpoint again (of either form:
    `ep0-ba{step}-rank0.pt` or a sharded `ep0-ba{step}/` directory). metrics.jsonl keeps its later lines,
    as a run killed between checkpoints would have."""
    folder = run_dir / "checkpoints"
    (run_dir / "summary.json").unlink()
    latest = folder / "latest-rank0.pt"
    latest.unlink()
    keep = None
    for path in sorted(folder.glob("ep*-ba*")):
        saved = int(path.name.split("-ba")[1].split("-")[0])  # ep0-ba4-rank0.pt, ep0-ba4
        if saved == step:
            keep = path
        elif saved > step:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert keep is not None, f"no checkpoint at step {step} in {folder}"
    latest.symlink_to(keep.name)


# --- W&B offline run files ---------------------------------------------------------------------------
# `run-ID.wandb`: a 7-byte header (":W&B", 0xBEE1 little-endian, version 0), then LevelDB's log format:
# 32 KiB blocks of records, each a 7-byte header (crc32c, length u16, type: 1 full, 2 first, 3 middle,
# 4 last) and its bytes; a block's tail shorter than a header is zero padding. Each record's bytes are
# one `wandb.proto.wandb_internal_pb2.Record`.

_BLOCK = 32768


def _wandb_records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B" and data[4:6] == b"\xe1\xbe", data[:7]
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0:  # padding to the block's end
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_offline_run(path: Path) -> dict[str, Any]:
    """{"id", "history": {step: {metric: value}}, "config": {key: value}} of one offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run: dict[str, Any] = {"id": None, "history": {}, "config": {}}
    for raw in _wandb_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["id"] = record.run.run_id
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            run["history"].setdefault(row["_step"], {}).update(row)
        elif kind == "config":
            for item in record.config.update:
                run["config"][_key(item)] = json.loads(item.value_json)
    return run
