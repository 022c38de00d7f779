"""Reading a mix in training order: `StreamingDataset(shuffle=False, num_canonical_nodes=1,
batch_size=B)` over an exported mix and the midmix loader over the index mix and over its export give
global step s = samples [s·G, (s+1)·G), for 1 and 2 ranks × 0 and 2 workers, from plain and
zstd-compressed sources; the midmix loader resumes at exactly the next batch after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import midmix
import pytest
from conftest import mix_of
from mixutil import prepare_sources, read_mix

pytest.importorskip("torch")
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mixes(tmp_path_factory) -> dict[str, Path]:
    """The same mix as an index (over a zstd-compressed and a plain source) and as its export."""
    root = tmp_path_factory.mktemp("order")
    sources = prepare_sources(root / "sources", seq_len=32, compression="zstd")
    assert not list(sources["prose"].glob("*.mds"))  # prose is read through the decompression cache
    phases = [("samples", 96, [("prose", 1.0)], False), ("samples", 96, [("prose", 0.5), ("code", 0.5)], False)]
    mix_of([(n, str(p)) for n, p in sources.items()], phases, root / "index", global_batch=8)
    midmix.export(root / "index", root / "export", size_limit=3000)
    return {"index": root / "index", "export": root / "export"}


@pytest.fixture(scope="module")
def mixed(mixes) -> Path:
    return mixes["index"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    kind: str,
    directory: Path,
    per_device: int,
    ranks: int,
    workers: int,
    tmp: Path,
    kill_after: int = 0,
    resume: bool = False,
) -> list[list[list[str]]]:
    """Each rank's batches. `kill_after` k: each rank saves its loader state after k batches and is killed
    (SIGKILL); `resume`: each rank starts from the state its killed run saved."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    # A short TMPDIR of their own: the DataLoader's workers and streaming put unix sockets there (108 bytes at
    # most), and pytest-xdist's temporary paths are long.
    short = Path(tempfile.mkdtemp(prefix="mm-order-"))
    procs, outs = [], []
    for r in range(ranks):
        out = tmp / f"{kind}-{ranks}-{workers}-{r}.json"
        env = dict(
            os.environ,
            RANK=str(r),
            WORLD_SIZE=str(ranks),
            LOCAL_RANK=str(r),
            LOCAL_WORLD_SIZE=str(ranks),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            TMPDIR=str(short),
            KILL_AFTER=str(kill_after),
            STATE=str(tmp.parent / f"state-{r}.json") if kill_after or resume else "",
            PYTHONPATH=os.pathsep.join([str(HERE.parent / "python"), os.environ.get("PYTHONPATH", "")]),
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "read_order.py"),
                    kind,
                    str(directory),
                    str(per_device),
                    str(workers),
                    str(out),
                ],
                env=env,
            )
        )
        outs.append(out)
    try:
        for p in procs:
            assert p.wait(timeout=300) == (-signal.SIGKILL if kill_after else 0)
    finally:
        shutil.rmtree(short, ignore_errors=True)
    return [] if kill_after else [json.loads(o.read_text()) for o in outs]


def expected_steps(directory: Path, g: int) -> list[list[str]]:
    _, rows = read_mix(directory)
    hexes = [r.astype("<u2").tobytes().hex() for r in rows]
    return [hexes[s : s + g] for s in range(0, len(hexes), g)]


def test_index_and_export_hold_the_same_samples(mixes) -> None:
    from midmix.loaders import MixDataset

    index_src, index_rows = read_mix(mixes["index"])
    export_src, export_rows = read_mix(mixes["export"])
    assert (index_src == export_src).all() and (index_rows == export_rows).all()
    assert len(list(mixes["export"].glob("shard.*.mds"))) > 1
    a, b = MixDataset(mixes["index"], 8, rank=0, world_size=1), MixDataset(mixes["export"], 8, rank=0, world_size=1)
    for step in range(len(a)):
        x, y = a.batch(step), b.batch(step)
        assert (x["input_ids"] == y["input_ids"]).all() and (x["source"] == y["source"]).all()
        assert (x["input_ids"].numpy() == export_rows[step * 8 : (step + 1) * 8]).all()
    assert a.fingerprint == b.fingerprint  # the same data: a run may resume on the export
    # The index is 5 bytes per sample; the export copies every token.
    index_bytes = sum(f.stat().st_size for f in mixes["index"].iterdir())
    export_bytes = sum(f.stat().st_size for f in mixes["export"].iterdir())
    assert index_bytes * 5 < export_bytes


@pytest.mark.parametrize("kind,form", [("streaming", "export"), ("midmix", "index"), ("midmix", "export")])
@pytest.mark.parametrize("ranks,workers", [(1, 0), (1, 2), (2, 0), (2, 2)])
def test_global_step_is_a_contiguous_slice(mixes, tmp_path, kind, form, ranks, workers) -> None:
    if kind == "streaming":
        pytest.importorskip("streaming")
    g, per_device = 8, 8 // ranks
    mixed = mixes[form]
    per_rank = run_ranks(kind, mixed, per_device, ranks, workers, tmp_path)
    expected = expected_steps(mixes["export"], g)
    assert all(len(b) == len(expected) for b in per_rank)
    for s, want in enumerate(expected):
        got = [row for r in range(ranks) for row in per_rank[r][s]]
        assert Counter(got) == Counter(want), f"global step {s} differs"
        if kind == "midmix":  # rank r holds samples s·G + r + ranks·j, in that order
            assert [per_rank[r][s] for r in range(ranks)] == [want[r::ranks] for r in range(ranks)]


@pytest.mark.parametrize("ranks,workers", [(1, 2), (2, 0)])
def test_midmix_loader_resumes_at_the_next_batch_after_a_kill(mixes, tmp_path, ranks, workers) -> None:
    full = run_ranks("midmix", mixes["export"], 8 // ranks, ranks, workers, tmp_path / "full")
    run_ranks("midmix", mixes["index"], 8 // ranks, ranks, workers, tmp_path / "killed", kill_after=5)
    resumed = run_ranks("midmix", mixes["index"], 8 // ranks, ranks, workers, tmp_path / "resumed", resume=True)
    for r in range(ranks):
        assert resumed[r] == full[r][5:]


def test_state_dict_round_trip(mixed) -> None:
    from midmix.loaders import MixDataset, MixLoader

    ds = MixDataset(mixed, 8, rank=0, world_size=1)
    state = ds.state_dict(24, True)
    again = MixDataset(mixed, 8, rank=0, world_size=1)
    again.load_state_dict(state)
    assert len(again) == len(ds)  # batches per pass, as StreamingDataset counts them
    assert (next(iter(again))["input_ids"] == ds.batch(3)["input_ids"]).all()
    loader = MixLoader(again)
    first, second = list(loader), list(loader)
    assert len(first) == len(ds) - 3 and len(second) == len(ds)  # the resume applies to one pass
    assert (second[0]["input_ids"] == ds.batch(0)["input_ids"]).all()
    assert (first[0]["input_ids"] == ds.batch(3)["input_ids"]).all()
    with pytest.raises(midmix.ConfigError, match="boundary"):
        again.load_state_dict({"sample_in_epoch": 5, "global_batch": 8})
    with pytest.raises(midmix.ConfigError, match="global batch"):
        again.load_state_dict({"sample_in_epoch": 8, "global_batch": 16})
