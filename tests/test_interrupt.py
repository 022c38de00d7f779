"""Ctrl-C and SIGTERM stop a long command promptly, commit nothing and leave no staging directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import midmix
import pytest
from conftest import PYTHIA, ROOT

DEMO = ROOT / "demo" / "data"
MIDMIX = [sys.executable, "-m", "midmix.cli"]


def staging_dirs(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".midmix-tmp-" in p.name]


def interrupt_when_staging(
    cmd: list[str], parent: Path, sig: int, after: float = 0.3, holding: str | None = None
) -> tuple[int, float]:
    """Start `cmd`, send `sig` `after` seconds after its staging directory exists (and holds a file named
    `holding`, when given); (exit code, seconds it took to stop)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not staging_dirs(parent) or (holding and not any((d / holding).exists() for d in staging_dirs(parent))):
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.stdout.read().decode()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(after)
    sent = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    return code, time.monotonic() - sent


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    """Prose packed into 8-token samples: a mix of millions of samples is a long build."""
    out = tmp_path_factory.mktemp("src") / "prose"
    midmix.prepare("prose", [DEMO / "prose.jsonl"], tokenizer=PYTHIA, seq_len=8, out=out, register=False)
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_build_mix_interrupted_commits_nothing(tiny_source, tmp_path, sig) -> None:
    out = tmp_path / "mix"
    cmd = [
        *MIDMIX,
        "build-mix",
        "--weights",
        "prose=1",
        "--samples",
        "40M",
        "--on-exhaust",
        "repeat",
        "--source",
        f"prose={tiny_source}",
        "--out",
        str(out),
        "--quiet",
        "--data-root",
        str(tmp_path),
    ]
    code, took = interrupt_when_staging(cmd, tmp_path, sig)
    assert code != 0
    assert took < 10, f"took {took:.1f}s to stop"
    assert not out.exists() and not staging_dirs(tmp_path)
    registry = tmp_path / "registry.json"  # nothing was registered either
    assert not registry.exists() or "mix" not in json.loads(registry.read_text())


@pytest.mark.parametrize(
    ("sig", "options", "within"),
    [
        (signal.SIGINT, [], 10),
        (signal.SIGTERM, [], 10),
        # zstd at level 19 compresses ~1 MB/s: a shard is compressed in pieces, and the
        # flusher sees the stop, so it waits neither for the shard nor for those queued
        # (Slurm kills 30 s after its SIGTERM).
        (signal.SIGTERM, ["--compression", "zstd:19", "--size-limit", "1MB"], 2),
    ],
    ids=["ctrl-c", "sigterm", "sigterm-zstd19"],
)
def test_prepare_interrupted_commits_nothing(tmp_path, sig, options: list[str], within: float) -> None:
    big = tmp_path / "big.jsonl"
    text = (DEMO / "prose.jsonl").read_text()[:4000]
    # ~200 MB of text, no two documents alike (a repeated one is served from the encoder's caches):
    # a few seconds of tokenizing even at full speed, so the signal comes while it works.
    with big.open("w") as f:
        f.writelines(json.dumps({"text": f"{i} {text[i % 997 :]}{text[: i % 997]}"}) + "\n" for i in range(50000))
    out = tmp_path / "out"
    cmd = [
        *MIDMIX,
        "prepare",
        "big",
        str(big),
        "--tokenizer",
        str(PYTHIA),
        "--out",
        str(out),
        "--quiet",
        "--data-root",
        str(tmp_path),
        *options,
    ]
    # With compression: once two shards are written, the tokenizer is ahead and more are queued.
    code, took = interrupt_when_staging(cmd, tmp_path, sig, holding="shard.00001.mds.zstd" if options else None)
    assert code != 0
    assert took < within, f"took {took:.1f}s to stop"
    assert not out.exists() and not staging_dirs(tmp_path)
