"""Reading a mix in training order: `StreamingDataset(shuffle=False, num_canonical_nodes=1,
batch_size=B)` and the midmix loader give global step s = samples [s·G, (s+1)·G), for 1 and 2
ranks × 0 and 2 workers; the midmix loader resumes at exactly the next batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import midmix
import pytest
from conftest import mix_of
from mixutil import prepare_sources, read_mix

pytest.importorskip("torch")
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("order")
    sources = prepare_sources(root / "sources", seq_len=32)
    out = root / "mix"
    phases = [("samples", 96, [("prose", 1.0)], False), ("samples", 96, [("prose", 0.5), ("code", 0.5)], False)]
    mix_of([(n, str(p)) for n, p in sources.items()], phases, out, global_batch=8, size_limit=3000)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(kind: str, directory: Path, per_device: int, ranks: int, workers: int, tmp: Path,
              resume: int = 0) -> list[list[list[str]]]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    procs, outs = [], []
    for r in range(ranks):
        out = tmp / f"{kind}-{ranks}-{workers}-{r}.json"
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(ranks), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(ranks),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TMPDIR=str(tmp), RESUME_AT=str(resume),
                   PYTHONPATH=os.pathsep.join([str(HERE.parent / "python"), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, str(HERE / "read_order.py"), kind, str(directory),
                                       str(per_device), str(workers), str(out)], env=env))
        outs.append(out)
    for p in procs:
        assert p.wait(timeout=300) == 0
    return [json.loads(o.read_text()) for o in outs]


def expected_steps(directory: Path, g: int) -> list[list[str]]:
    _, rows = read_mix(directory)
    hexes = [r.astype("<u2").tobytes().hex() for r in rows]
    return [hexes[s:s + g] for s in range(0, len(hexes), g)]


@pytest.mark.parametrize("kind", ["streaming", "midmix"])
@pytest.mark.parametrize("ranks,workers", [(1, 0), (1, 2), (2, 0), (2, 2)])
def test_global_step_is_a_contiguous_slice(mixed, tmp_path, kind, ranks, workers) -> None:
    if kind == "streaming":
        pytest.importorskip("streaming")
    g, per_device = 8, 8 // ranks
    per_rank = run_ranks(kind, mixed, per_device, ranks, workers, tmp_path)
    expected = expected_steps(mixed, g)
    assert all(len(b) == len(expected) for b in per_rank)
    for s, want in enumerate(expected):
        got = [row for r in range(ranks) for row in per_rank[r][s]]
        assert Counter(got) == Counter(want), f"global step {s} differs"
        if kind == "midmix":  # rank r holds samples s·G + r + ranks·j, in that order
            assert [per_rank[r][s] for r in range(ranks)] == [want[r::ranks] for r in range(ranks)]


@pytest.mark.parametrize("ranks,workers", [(1, 2), (2, 0)])
def test_midmix_loader_resumes_at_the_next_batch(mixed, tmp_path, ranks, workers) -> None:
    full = run_ranks("midmix", mixed, 8 // ranks, ranks, workers, tmp_path / "full")
    resumed = run_ranks("midmix", mixed, 8 // ranks, ranks, workers, tmp_path / "resumed", resume=5 * 8)
    for r in range(ranks):
        assert resumed[r] == full[r][5:]


def test_state_dict_round_trip(mixed) -> None:
    from midmix.data import MixDataset, MixLoader

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
