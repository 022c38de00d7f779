"""Same inputs and options → byte-identical output, whatever the thread count."""

from __future__ import annotations

from pathlib import Path

import midmix
import pytest
from conftest import PYTHIA, SHARED, tree_bytes

DEMO = Path(__file__).resolve().parent.parent / "demo" / "data"


@pytest.mark.parametrize("compression", [None, "zstd:3"])
def test_byte_identical_across_thread_counts(tmp_path, compression) -> None:
    inputs = [str(DEMO / "prose.jsonl"), str(DEMO / "code.jsonl.zst")]
    if SHARED.exists():
        inputs.append(str(SHARED / "corpora" / "math_like.parquet"))
    trees = []
    for threads in (1, 2, 8):
        out = tmp_path / f"t{threads}"
        midmix.prepare(
            "d",
            inputs,
            tokenizer=PYTHIA,
            seq_len=512,
            out=out,
            threads=threads,
            compression=compression,
            hashes=["sha1"],
            size_limit=1 << 17,
            register=False,
        )
        trees.append(tree_bytes(out))
    # Several shards with or without ../shared (the demo data alone fills a few at 128 KiB).
    assert sum(name.startswith("shard.") for name in trees[0]) >= 2
    assert trees[0] == trees[1] == trees[2]
