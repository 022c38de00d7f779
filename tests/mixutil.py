"""Helpers for mix tests: small prepared sources and an independent reading of mix outputs."""

from __future__ import annotations

import json
from pathlib import Path

import midmix
import numpy as np
from conftest import PYTHIA, shard_samples

DEMO = Path(__file__).resolve().parent.parent / "demo" / "data"


def prepare_sources(root: Path, seq_len: int = 64, compression: str | None = None) -> dict[str, Path]:
    """`prose` and `code` from the demo data (a few thousand samples each); `compression` applies to
    prose's shards."""
    out = {}
    for name, f in (("prose", "prose.jsonl"), ("code", "code.jsonl.zst")):
        out[name] = root / name
        if not out[name].exists():
            midmix.prepare(
                name,
                [str(DEMO / f)],
                tokenizer=PYTHIA,
                seq_len=seq_len,
                out=out[name],
                compression=compression if name == "prose" else None,
                size_limit=1 << 16,
                register=False,
            )
    return out


def read_mix(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """(source column [N], tokens [N, L]) parsed straight from the bytes: the shards of an MDS mix, or
    an index mix's two arrays resolved against its sources' shards."""
    manifest = json.loads((directory / "midmix.json").read_text())
    if manifest.get("form") == "index":
        src = np.fromfile(directory / manifest["index"]["source"]["file"], dtype=np.uint8).astype(np.int64)
        idx = np.fromfile(directory / manifest["index"]["sample"]["file"], dtype="<u4")
        dtype = np.dtype(manifest["columns"]["tokens"].split(":")[1]).newbyteorder("<")
        per_source = [
            [np.frombuffer(r, dtype=dtype) for r in source_rows(Path(info["path"]))] for info in manifest["source_info"]
        ]
        return src, np.stack([per_source[s][i] for s, i in zip(src, idx, strict=True)])
    index = json.loads((directory / "index.json").read_text())
    src, rows = [], []
    for shard in index["shards"]:
        assert shard["column_names"] == ["source", "tokens"]
        dtype = np.dtype(shard["column_encodings"][1].split(":")[1]).newbyteorder("<")
        for s in shard_samples(directory / shard["raw_data"]["basename"]):
            src.append(s[0])
            rows.append(np.frombuffer(s[1:], dtype=dtype))
    return np.array(src, dtype=np.int64), np.stack(rows)


def source_rows(directory: Path) -> list[bytes]:
    """Every sample of a prepared source as bytes, in order (zstd shards decompressed with `zstandard`)."""
    index = json.loads((directory / "index.json").read_text())
    rows = []
    for shard in index["shards"]:
        raw = directory / shard["raw_data"]["basename"]
        if not raw.exists():
            import tempfile

            import zstandard

            data = zstandard.ZstdDecompressor().decompress(
                (directory / shard["zip_data"]["basename"]).read_bytes(), max_output_size=1 << 31
            )
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "shard"
                raw.write_bytes(data)
                rows += shard_samples(raw)
            continue
        rows += shard_samples(raw)
    return rows


def scheduled_targets(phases: list[tuple[int, list[float], bool]], total: int) -> np.ndarray:
    """Independent oracle: T[n, i] = Σ_{t<n} w_i(t), from per-position weights (numpy cumsum)."""
    k = len(phases[0][1])
    w = np.zeros((total, k))
    start, prev = 0, None
    for length, weights, ramp in phases:
        end = min(start + length, total)
        to = np.array(weights) / np.sum(weights)
        if ramp:
            m = np.arange(1, end - start + 1)[:, None] / length
            w[start:end] = prev + (to - prev) * m
        else:
            w[start:end] = to
        prev, start = to, end
        if start >= total:
            break
    return np.vstack([np.zeros(k), np.cumsum(w, axis=0)])


def max_deviation(sources: np.ndarray, targets: np.ndarray) -> float:
    k = targets.shape[1]
    counts = np.vstack([np.zeros(k), np.cumsum(np.eye(k)[sources], axis=0)])
    return float(np.abs(counts - targets[: len(counts)]).max())
