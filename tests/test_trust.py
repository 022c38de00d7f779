"""Trust by construction, the cases one at a time: a name never re-points, --overwrite replaces only an
output of the same kind and never an input, remote URIs are refused, a symlink loop is an error, an edited
part is not merged. (Damage to every artifact × every reader is tests/test_faults.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import midmix
import pytest
from click.testing import CliRunner
from conftest import PYTHIA
from midmix.cli import main

DEMO = Path(__file__).resolve().parent.parent / "demo" / "data"


def cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def prepare(name: str, out: Path, root: Path, data: str = "prose.jsonl", *extra: object) -> object:
    return cli(
        "prepare",
        name,
        DEMO / data,
        "--tokenizer",
        PYTHIA,
        "--seq-len",
        64,
        "--out",
        out,
        "--data-root",
        root,
        "--quiet",
        *extra,
    )


def test_a_source_replaced_under_another_name_is_refused_by_its_old_name(tmp_path) -> None:
    root, d = tmp_path / "root", tmp_path / "D"
    assert prepare("math", d, root).exit_code == 0
    # Through the CLI, a directory registered as 'math' is not written under another name at all.
    r = prepare("code", d, root, "code.jsonl.zst", "--overwrite")
    assert r.exit_code == 1 and "is registered as 'math'" in r.output and "midmix rm math" in r.output, r.output
    # Replaced some other way (here the API, not registering), the old name refuses what D holds now.
    midmix.prepare(
        "code", [DEMO / "code.jsonl.zst"], tokenizer=PYTHIA, seq_len=64, out=d, overwrite=True, register=False
    )
    r = cli("build-mix", "--weights", "math=1", "--samples", 8, "--data-root", root, "--out", tmp_path / "m")
    assert r.exit_code != 0 and "'math' is registered in" in r.output and "now holds another one" in r.output
    assert not (tmp_path / "m").exists()
    for command in (("inspect", "math"), ("stats", "math"), ("verify", "math")):
        r = cli(*command, "--data-root", root)
        assert r.exit_code != 0 and "now holds another one" in r.output, (command, r.output)
    assert cli("rm", "math", "--data-root", root).exit_code == 0
    midmix.prepare(
        "code", [DEMO / "code.jsonl.zst"], tokenizer=PYTHIA, seq_len=64, out=d, overwrite=True, data_root=root
    )
    r = cli("build-mix", "--weights", "code=1", "--samples", 8, "--data-root", root, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output  # the name that was given to what D holds now


def test_a_name_is_never_given_to_a_second_directory(tmp_path) -> None:
    root = tmp_path / "root"
    assert prepare("prose", root / "prose", root).exit_code == 0
    assert prepare("code", root / "code", root, "code.jsonl.zst").exit_code == 0
    registry = (root / "registry.json").read_text()
    cases = [
        # a mix under a source's name, given or taken from --out (the recipes' header did this with c4)
        ("build-mix", "--weights", "prose=1", "--samples", 8, "--name", "prose", "--out", tmp_path / "mix1"),
        ("build-mix", "--weights", "prose=1", "--samples", 8, "--out", tmp_path / "mixes" / "code"),
        # a second prepare under a taken name
        (
            "prepare",
            "prose",
            DEMO / "code.jsonl.zst",
            "--tokenizer",
            PYTHIA,
            "--seq-len",
            64,
            "--out",
            tmp_path / "elsewhere",
        ),
    ]
    for args in cases:
        r = cli(*args, "--data-root", root)
        assert r.exit_code != 0, (args, r.output)
        assert "already names" in r.output and "--name" in r.output, r.output
        assert not Path(args[args.index("--out") + 1]).exists()  # refused before any work
    assert (root / "registry.json").read_text() == registry
    assert (
        cli(
            "build-mix", "--weights", "prose=1", "--samples", 8, "--out", tmp_path / "mix2", "--data-root", root
        ).exit_code
        == 0
    )
    r = cli("export", "mix2", "--out", tmp_path / "exp", "--name", "code", "--data-root", root)
    assert r.exit_code != 0 and "'code' already names" in r.output and not (tmp_path / "exp").exists()


def test_overwrite_never_deletes_an_input_or_another_kind(tmp_path) -> None:
    root = tmp_path / "root"
    out = tmp_path / "out"
    assert prepare("prose", out, root).exit_code == 0
    # The tokenizer the command reads, inside the output it would replace.
    tok = out / "tok.json"
    tok.write_bytes(PYTHIA.read_bytes())
    r = cli(
        "prepare",
        "prose",
        DEMO / "prose.jsonl",
        "--tokenizer",
        tok,
        "--seq-len",
        64,
        "--out",
        out,
        "--overwrite",
        "--data-root",
        root,
    )
    assert r.exit_code != 0 and "an input of this command" in r.output and tok.exists(), r.output
    # The schedule build-mix reads, inside the mix it would replace.
    assert (
        cli(
            "build-mix", "--weights", "prose=1", "--samples", 8, "--out", tmp_path / "mix", "--data-root", root
        ).exit_code
        == 0
    )
    schedule = tmp_path / "mix" / "s.yaml"
    schedule.write_text("phases:\n  - {samples: 8, weights: {prose: 1}}\n")
    r = cli(
        "build-mix",
        "--schedule",
        schedule,
        "--out",
        tmp_path / "mix",
        "--overwrite",
        "--data-root",
        root,
        "--name",
        "mix-b",
    )
    assert r.exit_code != 0 and "lies inside the output" in r.output and schedule.exists(), r.output
    # A mix is not replaced by a prepared dataset, nor the reverse.
    r = cli(
        "prepare",
        "mix",
        DEMO / "prose.jsonl",
        "--tokenizer",
        PYTHIA,
        "--seq-len",
        64,
        "--out",
        tmp_path / "mix",
        "--overwrite",
        "--data-root",
        root,
    )
    assert r.exit_code != 0 and "holds a midmix output of kind 'mix'" in r.output, r.output
    assert (
        cli(
            "prepare",
            "other",
            DEMO / "prose.jsonl",
            "--tokenizer",
            PYTHIA,
            "--seq-len",
            64,
            "--out",
            tmp_path / "other",
            "--data-root",
            root,
        ).exit_code
        == 0
    )
    r = cli(
        "build-mix",
        "--weights",
        "prose=1",
        "--samples",
        8,
        "--out",
        tmp_path / "other",
        "--overwrite",
        "--data-root",
        root,
        "--name",
        "other",
    )
    assert r.exit_code != 0 and "holds a midmix output of kind 'prepared'" in r.output, r.output
    assert midmix.read_manifest(out).kind == "prepared" and midmix.read_manifest(tmp_path / "mix").kind == "mix"


@pytest.mark.parametrize("uri", ["s3://bucket/x", "gs://b/x", "hf://datasets/x", "https://host/x"])
def test_a_remote_uri_is_a_clear_error_not_a_local_folder(uri, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = prepare("p", Path(uri), tmp_path / "root")
    assert r.exit_code != 0 and "locations are not supported yet" in r.output, r.output
    r = cli("prepare", "p", uri, "--tokenizer", PYTHIA, "--seq-len", 64, "--out", tmp_path / "o")
    assert r.exit_code != 0 and "locations are not supported yet" in r.output, r.output
    r = cli("inspect", uri)
    assert r.exit_code != 0
    assert os.listdir(tmp_path) == []  # no `s3:` folder, nothing else


def test_a_symlink_loop_in_an_input_directory_is_an_error(tmp_path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps({"text": "one document"}) + "\n")
    (d / "loop").symlink_to(d)
    r = cli(
        "prepare",
        "p",
        d,
        "--tokenizer",
        PYTHIA,
        "--seq-len",
        8,
        "--out",
        tmp_path / "o",
        "--data-root",
        tmp_path / "root",
    )
    assert r.exit_code != 0 and "a symlink loop" in r.output and not (tmp_path / "o").exists(), r.output


def test_a_part_whose_tail_was_edited_is_not_merged(tmp_path) -> None:
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"part{i}")
        midmix.prepare(
            "p", [str(DEMO / "prose.jsonl")], tokenizer=PYTHIA, seq_len=64, out=parts[-1], num_tasks=2, task_index=i
        )
    part = next(p for p in parts if json.loads((p / "midmix.json").read_text())["counts"]["samples"])
    m = json.loads((part / "midmix.json").read_text())
    m["task"]["tail"].append(17)  # one token more: the merged stream would shift
    (part / "midmix.json").write_text(json.dumps(m))
    with pytest.raises(midmix.DatasetError, match=rf"{part.name}/midmix.json: does not match its checksum"):
        midmix.merge(parts, tmp_path / "merged", register=False)
    assert not (tmp_path / "merged").exists()


def test_budgets_are_checked_by_arithmetic_before_any_work(tmp_path) -> None:
    root = tmp_path / "root"
    assert prepare("prose", root / "prose", root).exit_code == 0
    for tokens, says in (("1e18", "the mix needs"), ("1e19", "too large"), ("1e30", "too large")):
        r = cli("build-mix", "--weights", "prose=1", "--tokens", tokens, "--out", tmp_path / "m", "--data-root", root)
        assert r.exit_code != 0 and says in r.output and r.exc_info[0] is SystemExit, (tokens, r.output)
        r = cli(
            "build-mix",
            "--weights",
            "prose=1",
            "--tokens",
            tokens,
            "--on-exhaust",
            "repeat",
            "--out",
            tmp_path / "m",
            "--data-root",
            root,
        )
        assert r.exit_code != 0 and r.exc_info[0] is SystemExit, (tokens, r.output)
        assert "more than midmix plans" in r.output or "too large" in r.output, r.output
    r = cli("prepare", "p", DEMO / "prose.jsonl", "--tokenizer", PYTHIA, "--seq-len", 10**20, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--seq-len" in r.output and r.exc_info[0] is SystemExit
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()
