"""Index mixes: sources are checked on open and refused by name when they changed; the export is the
bytes `--materialize` writes; `verify`, `stats` and `inspect` read through the index; Megatron's order
on request; two compressed datasets in one process read their own tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import midmix
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PYTHIA, mix_of, tree_bytes
from midmix.cli import main
from mixutil import DEMO, prepare_sources, read_mix, source_rows

PHASES = [("samples", 400, [("prose", 0.7), ("code", 0.3)], False)]


@pytest.fixture()
def sources(tmp_path) -> dict[str, Path]:
    return prepare_sources(tmp_path / "sources", seq_len=32, compression="zstd")


def index_mix(sources: dict[str, Path], out: Path, **kw) -> midmix.MixManifest:
    return mix_of([(n, str(p)) for n, p in sources.items()], PHASES, out, global_batch=8, **kw)


def test_export_is_byte_identical_to_materialize(sources, tmp_path) -> None:
    m = index_mix(sources, tmp_path / "index")
    assert m.is_index and m.index is not None and m.index.positions == m.total_samples == 400
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["midmix.json", "mix.sample.u32", "mix.source.u8"]
    index_mix(sources, tmp_path / "mds", materialize=True)
    exported = midmix.export(tmp_path / "index", tmp_path / "exported")
    assert exported.form == "mds" and exported.index is None
    a, b = tree_bytes(tmp_path / "mds"), tree_bytes(tmp_path / "exported")
    ma, mb = json.loads(a.pop("midmix.json")), json.loads(b.pop("midmix.json"))
    assert a == b and len(a) >= 2  # every shard and index.json, byte for byte
    for m_ in (ma, mb):
        m_.pop("elapsed_s")
    assert ma == mb
    # Either form replaces the other under --overwrite (both are midmix datasets).
    index_mix(sources, tmp_path / "mds", overwrite=True)
    index_mix(sources, tmp_path / "mds", overwrite=True, materialize=True)
    # Exporting what is already MDS is refused.
    with pytest.raises(midmix.DatasetError, match="not an index mix"):
        midmix.export(tmp_path / "mds", tmp_path / "again")


def test_readers_go_through_the_index(sources, tmp_path) -> None:
    index_mix(sources, tmp_path / "index")
    src, rows = read_mix(tmp_path / "index")
    d = midmix.Dataset.open(tmp_path / "index")
    assert d.num_samples == 400 and d.shards == []
    tokens, got_src = d.tokens().gather([0, 17, 399])
    assert (tokens == rows[[0, 17, 399]]).all() and (got_src == src[[0, 17, 399]]).all()
    sample = d.sample(17)
    assert int(sample["source"]) == src[17] and (sample["tokens"] == rows[17]).all()
    # stats counts what the index realizes: each source's counts times how often its samples are taken.
    counts = midmix.count_unigrams_dataset(tmp_path / "index").counts
    assert (counts == np.bincount(rows.ravel(), minlength=len(counts))).all()
    report = midmix.verify(tmp_path / "index")
    assert report.kind == "mix" and report.tokens_checked == rows.size and report.hashes_checked >= 2
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "index"), "--show", "3"])
    assert r.exit_code == 0, r.output
    assert "form          index: 400 positions" in r.output and "(source " in r.output


def test_a_changed_source_is_refused_by_name(sources, tmp_path) -> None:
    index_mix(sources, tmp_path / "index")
    # Re-prepared: the same name and place, other content.
    shutil.rmtree(sources["code"])
    midmix.prepare("code", [str(DEMO / "prose.jsonl")], tokenizer=PYTHIA, seq_len=32, out=sources["code"])
    for open_it in (
        lambda: midmix.Dataset.open(tmp_path / "index").tokens(),
        lambda: midmix.verify(tmp_path / "index"),
        lambda: midmix.export(tmp_path / "index", tmp_path / "e"),
    ):
        with pytest.raises(midmix.DatasetError, match="source 'code' is not the data this mix was built on"):
            open_it()
    assert not (tmp_path / "e").exists()
    # Moved away.
    shutil.move(sources["prose"], tmp_path / "elsewhere")
    with pytest.raises(midmix.DatasetError, match="source 'prose' of this mix is gone"):
        midmix.Dataset.open(tmp_path / "index").tokens()


def test_a_truncated_source_shard_or_index_is_refused(sources, tmp_path) -> None:
    index_mix(sources, tmp_path / "index")
    shard = sorted(sources["code"].glob("*.mds"))[0]
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(midmix.DatasetError, match=r"code: dataset: shard .* bytes on disk"):
        midmix.Dataset.open(tmp_path / "index").tokens()
    other = tmp_path / "other"
    index_mix(prepare_sources(tmp_path / "s2", seq_len=32), other)
    sample_file = other / "mix.sample.u32"
    sample_file.write_bytes(sample_file.read_bytes()[:-4])
    with pytest.raises(midmix.DatasetError, match="truncated or rewritten"):
        midmix.Dataset.open(other).tokens()


def test_a_damaged_index_is_refused_naming_the_file(sources, tmp_path) -> None:
    index_mix(sources, tmp_path / "index")
    f = tmp_path / "index" / "mix.sample.u32"
    ids = np.fromfile(f, dtype="<u4")
    ids[5] = 10**9  # same size, points past the source
    ids.tofile(f)
    # Its recorded hash tells at open, before any position is served.
    with pytest.raises(midmix.DatasetError, match=r"mix.sample.u32: xxh3_128 is .* corrupt index"):
        midmix.verify(tmp_path / "index")
    with pytest.raises(midmix.DatasetError, match=r"mix.sample.u32: xxh3_128 is .* corrupt index"):
        midmix.Dataset.open(tmp_path / "index").tokens().gather([5])


def test_resume_on_another_mix_is_refused(sources, tmp_path) -> None:
    pytest.importorskip("torch")
    from midmix.loaders import MixDataset

    index_mix(sources, tmp_path / "a")
    index_mix(sources, tmp_path / "b", seed=1)
    state = MixDataset(tmp_path / "a", 8, rank=0, world_size=1).state_dict(16, True)
    with pytest.raises(midmix.ConfigError, match="saved on other data"):
        MixDataset(tmp_path / "b", 8, rank=0, world_size=1).load_state_dict(state)
    MixDataset(tmp_path / "a", 8, rank=0, world_size=1).load_state_dict(state)


def test_two_compressed_datasets_in_one_process_read_their_own_tokens(tmp_path) -> None:
    """Regression: both used to decompress into the same cache file name, the second overwriting the
    first under its live map."""
    a = prepare_sources(tmp_path / "a", seq_len=32, compression="zstd")["prose"]
    b = tmp_path / "b"
    midmix.prepare("other", [str(DEMO / "code.jsonl.zst")], tokenizer=PYTHIA, seq_len=32, out=b, compression="zstd")
    ra, rb = midmix.Dataset.open(a).tokens(), midmix.Dataset.open(b).tokens()
    for reader, directory in ((ra, a), (rb, b)):
        want = np.stack([np.frombuffer(r, dtype="<u2") for r in source_rows(directory)])
        got, _ = reader.gather(list(range(len(want))))
        assert (got == want).all()
    # The same inside one index mix over both (each source decompresses into its own cache).
    mix_of(
        [("prose", str(a)), ("other", str(b))],
        [("samples", 400, [("prose", 0.5), ("other", 0.5)], False)],
        tmp_path / "mix",
    )
    src, rows = read_mix(tmp_path / "mix")
    got, got_src = midmix.Dataset.open(tmp_path / "mix").tokens().gather(list(range(400)))
    assert (got == rows).all() and (got_src == src).all() and set(src.tolist()) == {0, 1}


def test_megatron_blend_rule_reproduces_build_blending_indices(sources, tmp_path) -> None:
    weights = {"prose": 0.2, "code": 0.8}
    m = midmix.build_mix(
        [midmix.Phase.samples(1000, weights)], tmp_path / "meg", sources=sources, blend_rule="megatron"
    )
    src, _ = read_mix(tmp_path / "meg")
    # Megatron-LM's rule (megatron/core/datasets/helpers.cpp), written out independently in numpy terms.
    w, current, want = np.array([0.2, 0.8]), np.zeros(2), []
    for n in range(1000):
        i = int(np.argmax(w * max(n, 1) - current))  # argmax: the first on ties, as the C++ loop
        want.append(i)
        current[i] += 1
    assert src.tolist() == want and m.blend_rule == "megatron"
    midmix.build_mix([midmix.Phase.samples(1000, weights)], tmp_path / "ours", sources=sources)
    ours, _ = read_mix(tmp_path / "ours")
    assert ours.tolist() != want  # midmix's own rule differs
    with pytest.raises(midmix.ConfigError, match="one phase of fixed weights"):
        midmix.build_mix(
            [midmix.Phase.samples(500, weights), midmix.Phase.samples(500, weights)],
            tmp_path / "two",
            sources=sources,
            blend_rule="megatron",
        )


def test_readers_decompress_each_shard_once_into_a_per_dataset_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MIDMIX_CACHE_DIR", str(tmp_path / "cache"))
    prose = prepare_sources(tmp_path / "s", seq_len=32, compression="zstd")["prose"]
    shards = len(list(prose.glob("*.mds.zstd")))
    first = midmix.Dataset.open(prose).tokens()
    assert not (tmp_path / "cache").exists()  # shards are decompressed when first read, not at open
    first.read_strided(0, 1, first.num_samples)
    (entry,) = (tmp_path / "cache").iterdir()
    files = {f.name: f.stat().st_mtime_ns for f in entry.iterdir()}
    assert len(files) == shards > 1
    second = midmix.Dataset.open(prose).tokens()  # as another DataLoader worker would
    second.read_strided(0, 1, second.num_samples)  # reuses the entries (checked against their hashes)
    assert {f.name: f.stat().st_mtime_ns for f in entry.iterdir()} == files
    assert (first.gather([0, 5])[0] == second.gather([0, 5])[0]).all()
