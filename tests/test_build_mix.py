"""`build-mix`: exact shares at every prefix (from the output's own `source` column), copied
tokens, per-source permutations, schedules and ramps, branch equivalence, exhaustion policies,
global batches, determinism and clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import midmix
import pytest
from click.testing import CliRunner
from conftest import GPT2, SHARED, mix_of, needs_shared, tree_bytes
from midmix import ConfigError, DatasetError
from midmix.cli import main
from mixutil import max_deviation, prepare_sources, read_mix, scheduled_targets, source_rows


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    return prepare_sources(tmp_path_factory.mktemp("sources"))


def mix(sources, phases, out, **kw) -> dict:
    srcs = kw.pop("names", None) or list(sources)
    return mix_of([(n, str(sources[n])) for n in srcs], phases, out, **kw).to_dict()


def test_weighted_mix_is_exact_and_copies_tokens(sources, tmp_path) -> None:
    out = tmp_path / "mix"
    rep = mix(sources, [("samples", 3000, [("code", 0.2), ("prose", 0.8)], False)], out, names=["code", "prose"])
    src, rows = read_mix(out)
    assert len(src) == rep["total_samples"] == 3000
    assert max_deviation(src, scheduled_targets([(3000, [0.2, 0.8], False)], 3000)) < 1
    assert rep["max_deviation"] < 1
    # Realized counts in midmix.json are those of the source column.
    assert rep["phases"][0]["samples"] == {"code": int((src == 0).sum()), "prose": int((src == 1).sum())}
    # Every sample is a copy of a source sample; no sample repeats within a pass.
    for i, name in enumerate(["code", "prose"]):
        have = Counter(source_rows(sources[name]))
        got = Counter(r.tobytes() for r in rows[src == i])
        assert all(have[r] >= c for r, c in got.items())
        assert len(got) == sum(got.values()) or len(have) < sum(have.values())  # distinct, unless the source has twins


def test_permutation_depends_only_on_seed_and_source(sources, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    mix(sources, [("samples", 2000, [("code", 0.5), ("prose", 0.5)], False)], a, seed=7, names=["code", "prose"])
    mix(sources, [("samples", 2000, [("prose", 0.9), ("code", 0.1)], False)], b, seed=7, names=["prose", "code"])
    (sa, ra), (sb, rb) = read_mix(a), read_mix(b)
    code_a, code_b = ra[sa == 0], rb[sb == 1]
    n = min(len(code_a), len(code_b))
    assert n > 100 and (code_a[:n] == code_b[:n]).all()
    c = tmp_path / "c"
    mix(sources, [("samples", 2000, [("code", 0.5), ("prose", 0.5)], False)], c, seed=8, names=["code", "prose"])
    assert not (read_mix(c)[1] == ra).all()


def test_schedule_with_ramp_is_exact_throughout(sources, tmp_path) -> None:
    phases = [(500, [1.0, 0.0], False), (700, [0.7, 0.3], True), (800, [0.5, 0.5], False)]
    spec = [("samples", n, [("prose", w[0]), ("code", w[1])], r) for n, w, r in phases]
    rep = mix(sources, spec, tmp_path / "m", names=["prose", "code"])
    src, _ = read_mix(tmp_path / "m")
    assert len(src) == 2000
    assert max_deviation(src, scheduled_targets(phases, 2000)) < 1
    assert [(p["start_sample"], p["end_sample"]) for p in rep["phases"]] == [(0, 500), (500, 1200), (1200, 2000)]
    assert (src[:500] == 0).all()


def test_branch_equivalence(sources, tmp_path) -> None:
    """Before its first weight change, a scheduled mix is byte-identical to the first phase alone."""
    for first in ([("prose", 1.0)], [("prose", 0.9), ("code", 0.1)]):
        sched, alone = tmp_path / f"s{len(first)}", tmp_path / f"a{len(first)}"
        mix(
            sources,
            [("samples", 640, first, False), ("samples", 1000, [("prose", 0.5), ("code", 0.5)], False)],
            sched,
            global_batch=64,
            names=["prose", "code"],
        )
        mix(sources, [("samples", 1280, first, False)], alone, global_batch=64, names=["prose", "code"])
        (s1, r1), (s2, r2) = read_mix(sched), read_mix(alone)
        assert (s1[:640] == s2[:640]).all() and (r1[:640] == r2[:640]).all()
        assert not (s1[640:1280] == s2[640:1280]).all()


def test_global_batch_and_exact_per_batch(sources, tmp_path) -> None:
    names = ["code", "prose"]
    # Phase ends round to the nearest global batch: 1000 samples → 21 batches of 48.
    rep = mix(
        sources,
        [("samples", 1000, [("code", 0.3), ("prose", 0.7)], False)],
        tmp_path / "g",
        global_batch=48,
        names=names,
    )
    assert rep["total_samples"] == 1008
    rep = mix(
        sources,
        [("samples", 960, [("code", 0.3), ("prose", 0.7)], False)],
        tmp_path / "e",
        global_batch=48,
        exact_per_batch=True,
        names=names,
    )
    src, _ = read_mix(tmp_path / "e")
    assert len(src) == 960
    for b in range(0, 960, 48):
        code = int((src[b : b + 48] == 0).sum())
        assert code in (14, 15), f"batch {b // 48} has {code} code samples for a share of 14.4"
    assert rep["max_deviation"] < 1


def test_exhaustion_policies(sources, tmp_path) -> None:
    n_code = json.loads((sources["code"] / "midmix.json").read_text())["counts"]["samples"]
    n_prose = json.loads((sources["prose"] / "midmix.json").read_text())["counts"]["samples"]
    assert 0.2 * n_code < n_prose  # so code is what runs out below
    names = ["code", "prose"]
    big = [("samples", n_code * 2, [("code", 0.9), ("prose", 0.1)], False)]
    with pytest.raises(ConfigError, match=r"source 'code' runs out: the plan needs \d+ tokens .* but it has"):
        mix(sources, big, tmp_path / "x", names=names)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="--max-repeat 1"):
        mix(sources, big, tmp_path / "x", on_exhaust="repeat", max_repeat=1, names=names)
    rep = mix(sources, big, tmp_path / "r", on_exhaust="repeat", max_repeat=2, names=names)
    assert 1 < rep["passes"]["code"] <= 2
    src, rows = read_mix(tmp_path / "r")
    code = [r.tobytes() for r in rows[src == 0]]
    first, second = code[:n_code], code[n_code:]
    assert Counter(first) == Counter(source_rows(sources["code"]))  # a full pass before any repeat
    assert first[: len(second)] != second  # a fresh permutation per pass
    rep = mix(sources, big, tmp_path / "s", on_exhaust="stop", names=names)
    assert rep["samples_per_source"]["code"] == n_code and rep["total_samples"] < n_code * 2
    # No budget: the largest mix in which no source repeats.
    rep = mix(sources, [("fill", 0, [("code", 0.5), ("prose", 0.5)], False)], tmp_path / "f")
    assert max(rep["passes"].values()) == pytest.approx(1.0)


def test_determinism_across_threads(sources, tmp_path) -> None:
    phases = [("samples", 500, [("prose", 1.0)], False), ("samples", 2500, [("prose", 0.4), ("code", 0.6)], True)]
    for materialize, files in ((False, 2), (True, 6)):
        trees = []
        for t in (1, 2, 8):
            out = tmp_path / f"t{t}-{materialize}"
            mix(sources, phases, out, threads=t, size_limit=20_000, names=["prose", "code"], materialize=materialize)
            tree = tree_bytes(out, ignore_run=False)
            rep = json.loads(tree.pop("midmix.json"))
            rep.pop("elapsed_s")
            trees.append((tree, rep))
        assert len(trees[0][0]) >= files and trees[0] == trees[1] == trees[2]


def test_bad_configurations(sources, tmp_path) -> None:
    out = tmp_path / "bad"

    def run(*args: str):
        return CliRunner().invoke(
            main,
            [
                "build-mix",
                "--out",
                str(out),
                "--source",
                f"prose={sources['prose']}",
                "--source",
                f"code={sources['code']}",
                "--data-root",
                str(tmp_path),
                *args,
            ],
        )

    for args, msg in [
        (["--weights", "prose=-1,code=1"], "non-negative"),
        (["--weights", "prose=0,code=0"], "all zero"),
        (["--weights", "prose=1,prose=2"], "given twice"),
        (["--weights", "prose=1,web=2"], "no dataset named 'web'"),
        (["--weights", "prose"], "NAME=WEIGHT"),
        (["--weights", "prose=1", "--tokens", "lots"], "bad --tokens"),
        (["--weights", "prose=1", "--exact-per-batch"], "needs --global-batch"),
    ]:
        r = run(*args)
        assert r.exit_code != 0 and msg in r.output, (args, r.output)
    sched = tmp_path / "s.yaml"
    sched.write_text("phases:\n  - weights: {prose: 1}\n  - samples: 10\n    weights: {code: 1}\n")
    r = run("--schedule", str(sched))
    assert r.exit_code != 0 and "phase 1: needs 'tokens' or 'samples'" in r.output
    sched.write_text("phases:\n  - samples: 10\n    weights: {prose: 1}\n    ramp: cubic\n")
    assert "ramp must be 'linear'" in run("--schedule", str(sched)).output
    sched.write_text("phases:\n  - samples: 10\n    weights: {prose: 1}\n    wieghts: {}\n")
    assert "unknown key wieghts" in run("--schedule", str(sched)).output
    assert not out.exists()

    # Sources must share tokenizer and seq_len.
    other = tmp_path / "other"
    midmix.prepare(
        "o",
        [str(Path(__file__).parent.parent / "demo" / "data" / "prose.jsonl")],
        tokenizer=sources["prose"].parent / "prose" / ".." / ".." / "x" if False else GPT2,
        seq_len=64,
        out=other,
    ) if GPT2.exists() else None
    if GPT2.exists():
        with pytest.raises(DatasetError, match="must share a tokenizer"):
            mix_of(
                [("prose", str(sources["prose"])), ("o", str(other))],
                [("samples", 10, [("prose", 1.0), ("o", 1.0)], False)],
                out,
            )
    longer = tmp_path / "longer"
    midmix.prepare(
        "l",
        [str(Path(__file__).parent.parent / "demo" / "data" / "prose.jsonl")],
        tokenizer=Path(__file__).parent / "fixtures" / "pythia.json",
        seq_len=128,
        out=longer,
    )
    with pytest.raises(DatasetError, match="seq_len"):
        mix_of(
            [("prose", str(sources["prose"])), ("l", str(longer))],
            [("samples", 10, [("prose", 1.0), ("l", 1.0)], False)],
            out,
        )
    assert not out.exists()


def test_cli_prints_plan_and_inspect_shows_shares(sources, tmp_path) -> None:
    r = CliRunner().invoke(
        main,
        [
            "build-mix",
            "--weights",
            "code=0.2,prose=0.8",
            "--samples",
            "1000",
            "--source",
            f"code={sources['code']}",
            "--source",
            f"prose={sources['prose']}",
            "--global-batch",
            "100",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "0.2000" in r.output and "(exact)" in r.output
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "m"), "--show", "0"])
    assert r.exit_code == 0, r.output
    assert "realized" in r.output and "--- sample 0" in r.output


@needs_shared()
def test_shared_corpora_scheduled_mix(tmp_path) -> None:
    """On the shared corpora: a ramped three-source midtraining schedule is exact at every prefix,
    byte-identical across thread counts, branch-equivalent to its first phase alone, and the
    exhaustion policies behave."""
    from conftest import PYTHIA

    srcs = {}
    for name in ("c4_like", "starcoder_like", "math_like"):
        srcs[name] = tmp_path / name
        midmix.prepare(
            name, [str(SHARED / "corpora" / f"{name}.parquet")], tokenizer=PYTHIA, seq_len=512, out=srcs[name]
        )
    names = list(srcs)
    phases = [(8192, [1.0, 0.0, 0.0], False), (4096, [0.8, 0.2, 0.0], True), (12288, [0.8, 0.08, 0.12], False)]
    spec = [("samples", n, list(zip(names, w, strict=True)), r) for n, w, r in phases]
    trees = []
    for t in (1, 2):
        rep = mix(srcs, spec, tmp_path / f"mix{t}", global_batch=256, names=names, threads=t, size_limit=4 << 20)
        tree = tree_bytes(tmp_path / f"mix{t}", ignore_run=False)
        trees.append((tree, {k: v for k, v in json.loads(tree.pop("midmix.json")).items() if k != "elapsed_s"}))
    assert trees[0] == trees[1]
    src, rows = read_mix(tmp_path / "mix1")
    assert len(src) == 24576 and rep["total_samples"] == 24576
    assert max_deviation(src, scheduled_targets(phases, len(src))) < 1

    mix(srcs, [("samples", 8192, [("c4_like", 1.0)], False)], tmp_path / "base", global_batch=256, names=names)
    bsrc, brows = read_mix(tmp_path / "base")
    assert (bsrc == src[:8192]).all() and (brows == rows[:8192]).all()

    n_math = json.loads((srcs["math_like"] / "midmix.json").read_text())["counts"]["samples"]
    heavy = [("samples", 2 * n_math, [("math_like", 0.9), ("c4_like", 0.1)], False)]
    with pytest.raises(ConfigError, match="source 'math_like' runs out"):
        mix(srcs, heavy, tmp_path / "x", names=names)
    rep = mix(srcs, heavy, tmp_path / "rep", names=names, on_exhaust="repeat", max_repeat=2)
    assert 1 < rep["passes"]["math_like"] <= 2
    rep = mix(srcs, heavy, tmp_path / "stop", names=names, on_exhaust="stop")
    assert rep["samples_per_source"]["math_like"] == n_math
