"""midmix's MDS output is byte-identical to `streaming.MDSWriter`'s for the same samples, and the
real `streaming` readers read it unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import midmix
import numpy as np
import pytest
import zstandard
from conftest import PYTHIA, read_tokens, shard_samples

streaming = pytest.importorskip("streaming")
from streaming import MDSWriter, StreamingDataset  # noqa: E402
from streaming.base.format.mds.reader import MDSReader  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "demo" / "data"


@pytest.fixture(autouse=True)
def _own_tmpdir(tmp_path, monkeypatch):
    # streaming keeps lock and shared-memory files under TMPDIR; keep each test's apart.
    d = tmp_path / "sys-tmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))


def recorded(hashes: list[str]) -> list[str]:
    """The hashes midmix records: those asked for and its content hash, xxh3_64 (sorted, as it writes them)."""
    return sorted({*hashes, "xxh3_64"})


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "midmix.json"}


def prepare_demo(out: Path, **kw) -> None:
    midmix.prepare(
        "prose", [str(DEMO / "prose.jsonl")], tokenizer=PYTHIA, seq_len=kw.pop("seq_len", 128), out=out, **kw
    )


@pytest.mark.parametrize("hashes", [[], ["sha1", "xxh3_64"], ["md5", "sha256", "xxh128", "xxh64"]])
def test_pretrain_output_is_byte_identical_to_mdswriter(tmp_path, hashes) -> None:
    ours = tmp_path / "ours"
    prepare_demo(ours, hashes=hashes, size_limit=50_000)
    tokens = read_tokens(ours)
    assert len(json.loads((ours / "index.json").read_text())["shards"]) > 3  # several shards

    theirs = tmp_path / "theirs"
    with MDSWriter(
        out=str(theirs), columns={"tokens": "ndarray:uint16:128"}, hashes=recorded(hashes), size_limit=50_000
    ) as w:
        for row in tokens:
            w.write({"tokens": row})
    assert files(ours) == files(theirs)


def test_no_size_limit_gives_one_shard_like_mdswriter(tmp_path) -> None:
    ours = tmp_path / "ours"
    prepare_demo(ours, size_limit=None)
    tokens = read_tokens(ours)
    theirs = tmp_path / "theirs"
    with MDSWriter(
        out=str(theirs), columns={"tokens": "ndarray:uint16:128"}, size_limit=None, hashes=recorded([])
    ) as w:
        for row in tokens:
            w.write({"tokens": row})
    assert files(ours) == files(theirs)


def test_zstd_shards_decode_to_mdswriter_bytes(tmp_path) -> None:
    ours = tmp_path / "ours"
    prepare_demo(ours, compression="zstd:7", hashes=["sha1"], size_limit=50_000)
    index = json.loads((ours / "index.json").read_text())
    # Only the compressed files are on disk, as with MDSWriter.
    assert sorted(p.name for p in ours.iterdir()) == sorted(
        ["index.json", "midmix.json"] + [s["zip_data"]["basename"] for s in index["shards"]]
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    for s in index["shards"]:
        frame = (ours / s["zip_data"]["basename"]).read_bytes()
        # The frame header carries the content size (old python-zstd releases need it).
        assert zstandard.get_frame_parameters(frame).content_size == s["raw_data"]["bytes"]
        (raw / s["raw_data"]["basename"]).write_bytes(zstandard.ZstdDecompressor().decompress(frame))
    tokens = np.stack(
        [np.frombuffer(x, np.uint16) for s in index["shards"] for x in shard_samples(raw / s["raw_data"]["basename"])]
    )

    theirs = tmp_path / "theirs"
    with MDSWriter(
        out=str(theirs),
        columns={"tokens": "ndarray:uint16:128"},
        compression="zstd:7",
        hashes=recorded(["sha1"]),
        size_limit=50_000,
    ) as w:
        for row in tokens:
            w.write({"tokens": row})
    their_index = json.loads((theirs / "index.json").read_text())
    for a, b in zip(index["shards"], their_index["shards"], strict=True):
        assert a["raw_data"] == b["raw_data"]  # same uncompressed bytes, same hashes
        assert {k: v for k, v in a.items() if k != "zip_data"} == {k: v for k, v in b.items() if k != "zip_data"}
        assert a["zip_data"]["basename"] == b["zip_data"]["basename"]

    ds = StreamingDataset(local=str(ours), shuffle=False, batch_size=4)
    got = np.stack([ds[i]["tokens"] for i in range(ds.num_samples)])
    assert np.array_equal(got, tokens)


def test_streaming_dataset_and_mdsreader_read_prepared_output(tmp_path) -> None:
    out = tmp_path / "ds"
    prepare_demo(out, size_limit=50_000, seq_len=256)
    expected = read_tokens(out)
    ds = StreamingDataset(local=str(out), shuffle=False, batch_size=8, num_canonical_nodes=1)
    assert ds.num_samples == len(expected)
    got = np.stack([s["tokens"] for s in ds])
    assert got.dtype == np.uint16 and np.array_equal(got, expected)

    index = json.loads((out / "index.json").read_text())
    first = MDSReader.from_json(str(out), None, index["shards"][0])
    assert np.array_equal(first.get_item(0)["tokens"], expected[0])


def test_sft_output_is_byte_identical_to_mdswriter(tmp_path) -> None:
    src = tmp_path / "sft.jsonl"
    rows = [
        {"prompt": f"Question {i}: what is {i} + {i}?\nAnswer:", "response": f" {2 * i}" + " ok" * (i % 7)}
        for i in range(300)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ours = tmp_path / "ours"
    midmix.prepare(
        "s", [str(src)], tokenizer=PYTHIA, seq_len=16, out=ours, mode="sft", size_limit=4000, on_bad_record="skip"
    )
    theirs = tmp_path / "theirs"
    index = json.loads((ours / "index.json").read_text())
    with MDSWriter(
        out=str(theirs),
        columns={"input_ids": "ndarray:uint16", "labels": "ndarray:int32"},
        size_limit=4000,
        hashes=recorded([]),
    ) as w:
        for s in index["shards"]:
            reader = MDSReader.from_json(str(ours), None, s)
            for i in range(reader.samples):
                item = reader.get_item(i)
                assert item["input_ids"].dtype == np.uint16 and item["labels"].dtype == np.int32
                w.write({"input_ids": item["input_ids"], "labels": item["labels"]})
    assert files(ours) == files(theirs)
    assert os.path.exists(ours / "midmix.json")
