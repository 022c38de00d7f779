"""The `midmix` command line: prepare → registry → inspect, merge, --hf, and error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import midmix
import pytest
from click.testing import CliRunner
from conftest import PYTHIA, token_stream
from midmix.cli import Size, main

DEMO = Path(__file__).resolve().parent.parent / "demo" / "data"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_prepare_registers_and_inspect_decodes(tmp_path) -> None:
    root = tmp_path / "root"
    r = invoke("prepare", "prose", DEMO / "prose.jsonl", "--tokenizer", PYTHIA, "--seq-len", 256, "--data-root", root)
    assert r.exit_code == 0, r.output
    assert "samples" in r.output and "dropped tail" in r.output
    reg = json.loads((root / "registry.json").read_text())
    assert Path(reg["prose"]["path"]) == (root / "prose").resolve()
    assert reg["prose"]["kind"] == "prepared"
    assert reg["prose"]["fingerprint"] == midmix.read_manifest(root / "prose").fingerprint
    r = invoke("inspect", "prose", "--data-root", root, "--show", 0)
    assert r.exit_code == 0, r.output
    assert "tokens:ndarray:uint16:256" in r.output and "--- sample 0" in r.output
    first_doc = json.loads((DEMO / "prose.jsonl").read_text().splitlines()[0])["text"]
    assert first_doc[:40] in r.output
    r = invoke("inspect", "nothing", "--data-root", root)
    assert r.exit_code != 0 and "known: prose" in r.output


def test_errors_are_clean_messages(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{oops}\n')
    r = invoke("prepare", "x", bad, "--tokenizer", PYTHIA, "--out", tmp_path / "out")
    assert r.exit_code == 1
    assert f"{bad}:2" in r.output and "invalid JSON" in r.output
    assert not (tmp_path / "out").exists()
    r = invoke(
        "prepare", "x", bad, "--tokenizer", PYTHIA, "--out", tmp_path / "out", "--on-bad-record", "skip", "--quiet"
    )
    assert r.exit_code == 0
    assert json.loads((tmp_path / "out" / "midmix.json").read_text())["counts"]["skipped"] == {"invalid_json": 1}
    r = invoke("prepare", "x", "--tokenizer", PYTHIA)
    assert r.exit_code == 2 and "--hf" in r.output


def test_cli_parts_and_merge(tmp_path) -> None:
    root = tmp_path / "root"
    parts = []
    for i in range(2):
        out = tmp_path / f"p{i}"
        r = invoke(
            "prepare",
            "mix",
            DEMO / "prose.jsonl",
            DEMO / "code.jsonl.zst",
            "--tokenizer",
            PYTHIA,
            "--seq-len",
            300,
            "--num-tasks",
            2,
            "--task-index",
            i,
            "--out",
            out,
            "--data-root",
            root,
            "--quiet",
        )
        assert r.exit_code == 0, r.output
        parts.append(out)
    assert not (root / "registry.json").exists()  # parts are not registered
    r = invoke("merge", *parts, "--out", tmp_path / "merged", "--data-root", root)
    assert r.exit_code == 0, r.output
    assert "mix" in json.loads((root / "registry.json").read_text())


def test_parse_size() -> None:
    parse_size = Size().convert
    assert parse_size("64MiB", None, None) == 64 << 20 and parse_size("100MB", None, None) == 10**8
    assert parse_size("none", None, None) is None and parse_size("123", None, None) == 123


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "12XB"])
def test_bad_size_limit_is_a_usage_error_not_a_traceback(bad, tmp_path) -> None:
    r = CliRunner().invoke(
        main,
        [
            "prepare",
            "p",
            str(DEMO / "prose.jsonl"),
            "--tokenizer",
            "x.json",
            "--out",
            str(tmp_path / "o"),
            "--size-limit",
            bad,
        ],
    )
    assert r.exit_code == 2 and "size" in r.output and r.exception is not None and isinstance(r.exception, SystemExit)


def test_hf_local_dataset(tmp_path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = ["first doc", "second doc", "third"]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": docs, "n": [1, 2, 3]})}).save_to_disk(saved)
    out = tmp_path / "out"
    r = invoke(
        "prepare",
        "hfds",
        "--hf",
        saved,
        "--split",
        "train",
        "--text-field",
        "body",
        "--tokenizer",
        PYTHIA,
        "--seq-len",
        2,
        "--out",
        out,
        "--data-root",
        tmp_path / "root",
        "--num-tasks",
        1,
        "--task-index",
        0,
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "midmix.json").read_text())
    assert rep["inputs"][0]["path"] == f"hf:{saved}:train"
    import tokenizers

    t = tokenizers.Tokenizer.from_file(str(PYTHIA))
    assert token_stream(out).tolist() == [i for d in docs for i in (*t.encode(d, add_special_tokens=False).ids, 0)]
    r = invoke("prepare", "hfds", "--hf", saved, "--split", "test", "--tokenizer", PYTHIA, "--out", tmp_path / "o2")
    assert r.exit_code == 1 and "no split 'test'" in r.output

    # A local directory of data files, read through load_dataset.
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    r = invoke(
        "prepare", "hf2", "--hf", files, "--tokenizer", PYTHIA, "--seq-len", 2, "--out", tmp_path / "o3", "--quiet"
    )
    assert r.exit_code == 0, r.output


def test_recipe_mistakes_are_one_line_before_torch_is_imported(tmp_path: Path) -> None:
    """A missing dataset or an unknown key is one line in about a second, from `midmix train` and from
    `composer -m midmix.train` (each rank), and leaves no run directory behind; --print-config shows the
    resolved recipe."""
    import subprocess
    import sys
    import time

    from conftest import ROOT

    recipe = ROOT / "recipes" / "tiny" / "pretrain.yaml"
    run_dir = tmp_path / "run"
    cases = [
        (["data.train.path=missing"], "data.train.path: no dataset named 'missing'"),
        (["optimizer.lrr=1"], "unknown key optimizer.lrr"),
    ]
    for overrides, want in cases:
        for cmd in ([sys.executable, "-m", "midmix.cli", "train"], [sys.executable, "-m", "midmix.train"]):
            started = time.monotonic()
            r = subprocess.run(
                [*cmd, str(recipe), f"run_dir={run_dir}", *overrides], cwd=tmp_path, capture_output=True, text=True
            )
            took = time.monotonic() - started
            out = (r.stdout + r.stderr).strip()
            assert r.returncode != 0 and want in out and len(out.splitlines()) == 1, (cmd, out)
            assert took < 8, f"{took:.1f} s: torch and Composer were imported first (11-26 s on a busy machine)"
            assert not run_dir.exists()
    r = CliRunner().invoke(main, ["train", str(recipe), "--print-config", f"data.train.path={ROOT / 'demo'}"])
    assert r.exit_code == 0 and str(ROOT / "demo") in r.output  # the keys, whether or not the data exists yet
    data = tmp_path / "data"
    for name in ("mix", "val"):
        midmix.prepare(name, [ROOT / "demo" / "data" / "prose_val.jsonl"], tokenizer=PYTHIA, seq_len=64, data_root=data)
    r = CliRunner().invoke(
        main,
        [
            "train",
            str(recipe),
            "--print-config",
            f"data.train.path={data / 'mix'}",
            f"data.eval.general.path={data / 'val'}",
            "optimizer.lr=0.01",
        ],
    )
    assert r.exit_code == 0, r.output
    import yaml

    shown = yaml.safe_load(r.output)
    assert shown["optimizer"]["lr"] == 0.01 and shown["precision"] == "auto" and shown["fsdp"] is None
    assert not run_dir.exists()


def test_one_cli_json_everywhere_both_option_styles_and_the_registry(tmp_path: Path) -> None:
    """Every command that reports has --json; options that take several values take them repeated or
    comma-separated; exclusive options say "not both"; `ls` lists names (a stale one says so) and `rm`
    forgets one and leaves its directory."""
    from conftest import ROOT

    root = ["--data-root", str(tmp_path / "data")]
    demo = ROOT / "demo" / "data"

    def ok(*args: str) -> str:
        r = CliRunner().invoke(main, list(args))
        assert r.exit_code == 0, (args, r.output)
        return r.output

    for name, f in (("p", "prose_val.jsonl"), ("c", "code_val.jsonl")):
        ok("prepare", name, str(demo / f), "--tokenizer", str(PYTHIA), "--seq-len", "64", "--quiet", *root)
    mix = tmp_path / "data" / "m"
    built = json.loads(
        ok("build-mix", "--weights", "p=0.5,c=0.5", "--samples", "16", "--out", str(mix), "--json", *root)
    )
    assert built["kind"] == "mix" and built["total_samples"] == 16
    assert json.loads(ok("verify", "m", "--json", *root))["samples"] == 16
    assert json.loads(ok("stats", "m", "--json", "--top", "3", *root))["samples"] == 16
    exported = json.loads(ok("export", "m", "--out", str(tmp_path / "m-mds"), "--json", *root))
    assert exported["form"] == "mds" and exported["fingerprint"] == built["fingerprint"]
    r = CliRunner().invoke(
        main,
        [
            "build-mix",
            "--weights",
            "p=1",
            "--schedule",
            str(ROOT / "demo" / "schedule.yaml"),
            "--out",
            str(tmp_path / "x"),
            *root,
        ],
    )
    assert r.exit_code == 2 and "not both" in r.output
    a = ok("proximity", "--target", "p", "--base", "c", "--candidates", "m", "--candidates", "p", *root)
    b = ok("proximity", "--target", "p", "--base", "c", "--candidates", "m,p", *root)
    assert a == b and " m " in a
    listed = {e["name"]: e for e in json.loads(ok("ls", "--json", *root))}
    assert sorted(listed) == ["c", "m", "p"] and all(e["state"] == "ok" for e in listed.values())
    assert "removed 'm'" in ok("rm", "m", *root) and (mix / "midmix.json").exists()
    (tmp_path / "data" / "c").rename(tmp_path / "data" / "c-moved")
    shown = ok("ls", *root)
    assert "stale" in shown.splitlines()[0] and not any(line.startswith("m ") for line in shown.splitlines())
    r = CliRunner().invoke(main, ["rm", "nope", *root])
    assert r.exit_code == 1 and "no name 'nope'" in r.output


def test_a_newcomers_mistakes_are_caught_and_said(tmp_path: Path) -> None:
    """What a first hour runs into: a directory registered under another name, names that are not names, an
    empty result, an output file in a folder not made yet, a recipe's keys before its data exists, an override
    given twice, a budget rounded to whole batches."""
    from conftest import ROOT

    demo = ROOT / "demo" / "data"
    root = ["--data-root", str(tmp_path / "data")]

    def run(*args: str):
        return CliRunner().invoke(main, list(args))

    prep = ["--tokenizer", str(PYTHIA), "--seq-len", "64", "--quiet", *root]
    assert run("prepare", "code", str(demo / "code_val.jsonl"), *prep).exit_code == 0
    # Another name into a directory registered as 'code': every mix over 'code' would change.
    r = run(
        "prepare",
        "code2",
        str(demo / "prose_val.jsonl"),
        "--out",
        str(tmp_path / "data" / "code"),
        "--overwrite",
        *prep,
    )
    assert r.exit_code == 1 and "is registered as 'code'" in r.output and "midmix rm code" in r.output, r.output
    for bad in ("bad/name", " ", "", ".."):
        r = run("prepare", bad, str(demo / "prose_val.jsonl"), *prep)
        assert r.exit_code == 1 and "is not a dataset name" in r.output, (bad, r.output)
    # Nothing usable: said at once, and later commands say why.
    (tmp_path / "bad.jsonl").write_text('{"other": 1}\n')
    r = run("prepare", "empty", str(tmp_path / "bad.jsonl"), "--on-bad-record", "skip", *prep)
    assert r.exit_code == 0 and "holds no samples" in r.output, r.output
    r = run("stats", "empty", *root)
    assert r.exit_code == 1 and "has no samples" in r.output, r.output
    # Output files in folders not made yet.
    assert run("stats", "code", "--out", str(tmp_path / "new" / "dir" / "c.npz"), *root).exit_code == 0
    assert (tmp_path / "new" / "dir" / "c.npz").exists()
    # A recipe's keys before its data exists; an override given twice.
    recipe = str(ROOT / "recipes" / "tiny" / "pretrain.yaml")
    r = run("train", recipe, "--print-config")
    assert r.exit_code == 0 and "global_batch_size" in r.output, r.output
    r = run("train", recipe, "--print-config", "optimizer.lr=1", "optimizer.lr=2")
    assert r.exit_code == 1 and "optimizer.lr given twice" in r.output, r.output
    r = run("train", recipe, "--print-config", "optimizer.lrr=1")
    assert r.exit_code == 1 and "with optimizer.lrr=1: unknown key" in r.output, r.output
    # A budget rounded up to whole global batches says so.
    r = run(
        "build-mix",
        "--weights",
        "code=1",
        "--samples",
        "30",
        "--global-batch",
        "16",
        "--out",
        str(tmp_path / "data" / "m"),
        "--quiet",
        *root,
    )
    assert r.exit_code == 0 and "30 samples asked; the mix holds 32 samples" in r.output, r.output
    # rm of a name whose directory is DATA_ROOT/NAME says it is still found by that name.
    r = run("rm", "code", "code", *root)
    assert r.exit_code == 0 and "still found by that name" in r.output and r.output.count("removed") == 1
