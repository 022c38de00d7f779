"""Inputs that used to be taken silently, or crash with a traceback, are clear errors naming what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import midmix
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PYTHIA, ROOT, mix_of
from midmix.cli import main

DEMO = ROOT / "demo" / "data"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def prose(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("p") / "prose"
    midmix.prepare("prose", [DEMO / "prose.jsonl"], tokenizer=PYTHIA, seq_len=64, out=out, register=False)
    return out


# -- duplicates never win silently --------------------------------------------------------------------


def test_duplicate_weight_in_a_schedule_is_an_error(tmp_path) -> None:
    sched = tmp_path / "s.yaml"
    sched.write_text("phases:\n  - samples: 10\n    weights: {c4: 0.2, math: 0.8, c4: 0.5}\n")
    with pytest.raises(midmix.ConfigError, match=r"line 3: key 'c4' is given twice"):
        midmix.load_schedule(sched)


def test_second_phases_key_is_an_error(tmp_path) -> None:
    sched = tmp_path / "s.yaml"
    sched.write_text("phases:\n  - weights: {a: 1}\nphases:\n  - weights: {b: 1}\n")
    with pytest.raises(midmix.ConfigError, match="'phases' is given twice"):
        midmix.load_schedule(sched)


def test_duplicate_key_in_a_recipe_is_an_error(tmp_path) -> None:
    from midmix.train.config import load_yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text("optimizer:\n  lr: 1e-3\n  lr: 1e-2\n")
    with pytest.raises(midmix.ConfigError, match=r"r.yaml: line 3: key 'lr' is given twice"):
        load_yaml(recipe, [], dict, lambda _: None)


def test_same_source_name_twice_is_an_error(prose, tmp_path) -> None:
    r = run(
        "build-mix", "--weights", "c4=1", "--source", f"c4={prose}", "--source", f"c4={prose}x", "--out", tmp_path / "m"
    )
    assert r.exit_code == 2 and "'c4' is given twice" in r.output
    assert not (tmp_path / "m").exists()


# -- errors, not tracebacks ---------------------------------------------------------------------------


def test_inspect_of_a_registered_name_whose_directory_was_deleted(tmp_path) -> None:
    root = tmp_path / "root"
    out = tmp_path / "gone"
    midmix.prepare("gone", [DEMO / "prose.jsonl"], tokenizer=PYTHIA, seq_len=64, out=out, data_root=root)
    shutil.rmtree(out)
    r = run("inspect", "gone", "--data-root", root)
    assert r.exit_code == 1 and "no longer holds a dataset" in r.output and r.exc_info[0] is SystemExit


@pytest.mark.parametrize("broken", ["index.json", "midmix.json"])
def test_inspect_and_stats_of_an_invalid_json_file(prose, tmp_path, broken) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prose, copy)
    (copy / broken).write_text("{not json")
    for cmd in (["inspect", copy], ["stats", f"x={copy}"]):
        r = run(*cmd)
        assert r.exit_code == 1 and broken in r.output and r.exc_info[0] is SystemExit, r.output


def test_manifest_missing_a_field_names_it(prose, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prose, copy)
    m = json.loads((copy / "midmix.json").read_text())
    del m["counts"]["samples"]
    (copy / "midmix.json").write_text(json.dumps(m))
    # Sealed: any edit is caught by the manifest's checksum, before its fields are read.
    with pytest.raises(midmix.DatasetError, match=r"midmix.json: does not match its checksum"):
        midmix.Dataset.open(copy)
    # The seal's key removed with it: refused too, or a checksum could be dropped to pass an edit.
    del m["checksum"]
    (copy / "midmix.json").write_text(json.dumps(m))
    with pytest.raises(midmix.DatasetError, match=r"midmix.json: records a fingerprint but no checksum"):
        midmix.Dataset.open(copy)
    # Every seal field removed with the edit: refused (it used to pass as a manifest from before seals).
    for key in ("fingerprint", "index_xxh3_128"):
        del m[key]
    (copy / "midmix.json").write_text(json.dumps(m))
    with pytest.raises(midmix.DatasetError, match=r"midmix.json: has no checksum: its seal was removed"):
        midmix.Dataset.open(copy)


def test_stats_of_a_missing_path_and_a_junk_npz(tmp_path) -> None:
    r = run("stats", f"x={tmp_path / 'nope'}")
    assert r.exit_code == 1 and "does not exist" in r.output and r.exc_info[0] is SystemExit
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    r = run("stats", f"x={junk}")
    assert r.exit_code == 1 and "not unigram statistics" in r.output and r.exc_info[0] is SystemExit


# -- loader state ---------------------------------------------------------------------------------------


def test_loader_refuses_bad_or_foreign_state(prose, tmp_path) -> None:
    pytest.importorskip("torch")
    from midmix.loaders import MixDataset

    mix = mix_of([("prose", prose)], [("samples", 64, [("prose", 1.0)], False)], tmp_path / "a", global_batch=8)
    other = mix_of(
        [("prose", prose)], [("samples", 64, [("prose", 1.0)], False)], tmp_path / "b", global_batch=8, seed=1
    )
    assert mix.total_samples == other.total_samples == 64
    ds = MixDataset(tmp_path / "a", 8, rank=0, world_size=1)
    with pytest.raises(midmix.ConfigError, match="no 'sample_in_epoch'"):
        ds.load_state_dict({"global_batch": 8})
    with pytest.raises(midmix.ConfigError, match="not a sample index"):
        ds.load_state_dict({"sample_in_epoch": -8, "global_batch": 8})
    foreign = MixDataset(tmp_path / "b", 8, rank=0, world_size=1).state_dict(16)
    with pytest.raises(midmix.ConfigError, match="saved on other data"):
        ds.load_state_dict(foreign)
    ds.load_state_dict(ds.state_dict(16))  # its own state is fine
    assert np.array_equal(next(iter(ds))["input_ids"].numpy(), ds.batch(2)["input_ids"].numpy())


# -- midmix verify ----------------------------------------------------------------------------------------


def test_verify_passes_a_good_dataset_and_names_a_flipped_byte(tmp_path) -> None:
    out = tmp_path / "h"
    midmix.prepare(
        "h", [DEMO / "prose.jsonl"], tokenizer=PYTHIA, seq_len=64, out=out, hashes=["sha1", "xxh3_64"], register=False
    )
    r = run("verify", out)
    assert r.exit_code == 0 and "2 recorded shard hashes" in r.output, r.output
    report = midmix.verify(out)
    assert report.samples == midmix.Dataset.open(out).num_samples and report.tokens_checked == report.samples * 64
    shard = out / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    r = run("verify", out)
    assert r.exit_code == 1 and "shard.00000.mds fails its sha1 check" in r.output, r.output


# -- readers check what is cheap to check -----------------------------------------------------------------


def test_reader_refuses_an_index_that_disagrees_with_the_manifest(prose, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prose, copy)
    index = json.loads((copy / "index.json").read_text())
    index["shards"][0]["samples"] -= 10
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(midmix.DatasetError, match="index.json: differs from the one midmix.json records"):
        midmix.Dataset.open(copy).tokens()


def test_loader_refuses_a_token_id_past_the_vocabulary(prose, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prose, copy)
    shard = copy / "shard.00000.mds"
    data = bytearray(shard.read_bytes())
    data[-2:] = (65535).to_bytes(2, "little")  # the last token of the last sample: an id no Pythia token has
    shard.write_bytes(bytes(data))
    reader = midmix.Dataset.open(copy).tokens()  # opening maps no shard
    # The shard no longer matches its content hash: refused when it is first mapped, before any id is
    # served (ids past the vocabulary are checked too, for data whose hashes cannot tell).
    with pytest.raises(
        midmix.DatasetError, match=r"shard.00000.mds: its bytes hash to xxh3_64 .* \(reading position 0"
    ):
        reader.read_strided(0, 1, 1)
