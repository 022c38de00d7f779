"""Shared test helpers. MDS files are parsed here with numpy straight from the format spec, as an
oracle independent of midmix's own reader."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

# What the tests prepare is registered in a data root of the test run's own, never in ./data.
os.environ["MIDMIX_DATA_ROOT"] = tempfile.mkdtemp(prefix="midmix-test-root-")
atexit.register(shutil.rmtree, os.environ["MIDMIX_DATA_ROOT"], ignore_errors=True)
# ... and readers decompress shards into a cache of its own (subprocesses inherit both).
os.environ["MIDMIX_CACHE_DIR"] = tempfile.mkdtemp(prefix="midmix-test-cache-")
atexit.register(shutil.rmtree, os.environ["MIDMIX_CACHE_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The offline corpora; tests that need them skip when absent. MIDMIX_TEST_SHARED points elsewhere
# (CI sets it to a missing path to check that the suite passes without them).
SHARED = Path(os.environ.get("MIDMIX_TEST_SHARED") or ROOT.parent / "shared" / "data")
PYTHIA = FIXTURES / "pythia.json"
GPT2 = SHARED / "tokenizers" / "gpt2.json"


def needs_shared() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")


def shard_samples(path: Path) -> list[bytes]:
    """Every sample's bytes in one uncompressed shard file."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data, 0)
    offsets = struct.unpack_from(f"<{n + 1}I", data, 4)
    assert offsets[-1] == len(data)
    return [data[offsets[i]:offsets[i + 1]] for i in range(n)]


def read_tokens(directory: Path) -> np.ndarray:
    """All `tokens` samples of a pretraining dataset, as one (samples, seq_len) array."""
    index = json.loads((directory / "index.json").read_text())
    rows = []
    for shard in index["shards"]:
        assert shard["column_names"] == ["tokens"]
        dtype = np.dtype(shard["column_encodings"][0].split(":")[1]).newbyteorder("<")
        for s in shard_samples(directory / shard["raw_data"]["basename"]):
            rows.append(np.frombuffer(s, dtype=dtype))
    if not rows:
        return np.zeros((0, 0), dtype=np.uint32)
    return np.stack(rows)


def token_stream(directory: Path) -> np.ndarray:
    """The packed samples followed by the kept tail (for datasets prepared as a task part)."""
    report = json.loads((directory / "midmix.json").read_text())
    tail = np.array(report["task"]["tail"] if report.get("task") else [], dtype=np.int64)
    return np.concatenate([read_tokens(directory).reshape(-1).astype(np.int64), tail])


def report(directory: Path) -> dict:
    return json.loads((directory / "midmix.json").read_text())


def tree_bytes(directory: Path, ignore_run: bool = True) -> dict[str, bytes]:
    """Every file's bytes; midmix.json without its run-specific `run` section."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if ignore_run and p.name == "midmix.json":
                obj = json.loads(data)
                obj.pop("run", None)
                data = json.dumps(obj, sort_keys=True).encode()
            out[str(p.relative_to(directory))] = data
    return out


def mix_of(sources, phases, out, **kw):
    """`midmix.build_mix` with (name, path) sources and phases as (kind, length, [(name, weight)], ramp)."""
    import midmix

    return midmix.build_mix([midmix.Phase(*p) for p in phases], out, sources=dict(sources), **kw)
