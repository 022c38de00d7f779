"""Helpers for training tests: a finished run put back to an earlier checkpoint, and W&B's offline run
files read straight from their format."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
        chunk = data[pos + 7:pos + 7 + length]
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
