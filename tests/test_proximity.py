"""Unigram statistics and proximity: counts against HF tokenizers and numpy bincount, every formula
against an independent implementation of the paper's script, mixture-aware scores against a real
built mix, and the study's PA ordering on the shared corpora."""

from __future__ import annotations

import json
import math
from collections import Counter

import midmix
import numpy as np
import pytest
import tokenizers
from click.testing import CliRunner
from conftest import PYTHIA, SHARED, mix_of, needs_shared, read_tokens
from midmix.cli import main
from midmix.manifest import read_manifest
from midmix.proximity import UnigramStats, proximity, proximity_advantage
from mixutil import DEMO, prepare_sources


def paper_metrics(tokens_a: list[int], tokens_b: list[int]) -> dict[str, float]:
    """The paper's `token` method, written independently: Counters over the union vocabulary."""
    ca, cb = Counter(tokens_a), Counter(tokens_b)
    vocab = sorted(set(ca) | set(cb))
    va = np.array([ca[t] for t in vocab], dtype=float)
    vb = np.array([cb[t] for t in vocab], dtype=float)
    p, q = va / va.sum(), vb / vb.sum()
    inter = len(set(ca) & set(cb))
    jac = inter / len(vocab)
    cos = float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))
    m = (p + q) / 2
    kl1 = sum(pi * math.log(pi / (mi + 1e-10) + 1e-10) for pi, mi in zip(p, m, strict=True) if pi > 0)
    kl2 = sum(qi * math.log(qi / (mi + 1e-10) + 1e-10) for qi, mi in zip(q, m, strict=True) if qi > 0)
    jsd = (kl1 + kl2) / 2
    return {
        "vocab_jaccard": jac,
        "overlap_ratio": inter / min(len(ca), len(cb)),
        "cosine": cos,
        "jsd": jsd,
        "js_similarity": 1 / (1 + jsd),
        "combined": 0.4 * cos + 0.3 * jac + 0.3 / (1 + jsd),
        "jsd_normalized": 1 - jsd / math.log(2),
    }


def stats_of(tokens: list[int], name: str, vocab: int = 64) -> UnigramStats:
    return UnigramStats(name, np.bincount(tokens, minlength=vocab).astype(np.uint64), 1, len(tokens))


def test_formulas_match_an_independent_implementation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 40, size=rng.integers(1, 300)).tolist()
        b = rng.integers(10, 64, size=rng.integers(1, 300)).tolist()
        ours = proximity(stats_of(a, "a"), stats_of(b, "b"))
        for k, v in paper_metrics(a, b).items():
            assert ours[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        # KL(a‖b) with add-one smoothing over the whole vocabulary.
        ca, cb = np.bincount(a, minlength=64) + 1.0, np.bincount(b, minlength=64) + 1.0
        pa, pb = ca / ca.sum(), cb / cb.sum()
        assert ours["kl_smoothed"] == pytest.approx(float(np.sum(pa * np.log(pa / pb))), rel=1e-9)
    same = stats_of([1, 2, 2, 3], "x")
    s = proximity(same, same)
    assert s["jsd"] == pytest.approx(0, abs=1e-9) and s["cosine"] == pytest.approx(1) and s["vocab_jaccard"] == 1


def test_mixture_is_the_exact_weighted_sum_and_pa() -> None:
    base, cand, target = stats_of([1, 1, 2, 3], "base"), stats_of([5, 5, 6], "cand"), stats_of([5, 6, 1], "t")
    m = base.mix(cand, 0.25)
    assert np.allclose(m.probs, 0.75 * base.probs + 0.25 * cand.probs)
    assert set(np.nonzero(m.counts)[0]) == {1, 2, 3, 5, 6}
    assert proximity_advantage(m, target, base) == pytest.approx(
        proximity(m, target)["combined"] - proximity(base, target)["combined"]
    )
    assert proximity_advantage(m, target, base) > 0


def test_raw_counts_equal_hf_tokenizer_counts(tmp_path) -> None:
    docs = [json.loads(line)["text"] for line in (DEMO / "prose.jsonl").read_text().splitlines()[:60]]
    hf = tokenizers.Tokenizer.from_file(str(PYTHIA))
    ids = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    for cap in (None, 512):
        s = UnigramStats.from_files([src], PYTHIA, max_tokens_per_doc=cap)
        want = np.bincount([t for d in ids for t in (d[:cap] if cap else d)], minlength=len(s.counts))
        assert np.array_equal(s.counts, want) and s.documents == 60
    # A seeded sample: exactly k documents, the same for the same seed.
    a = UnigramStats.from_files([src], PYTHIA, max_docs=10, seed=1)
    b = UnigramStats.from_files([src], PYTHIA, max_docs=10, seed=1)
    c = UnigramStats.from_files([src], PYTHIA, max_docs=10, seed=2)
    assert a.documents == 10 and np.array_equal(a.counts, b.counts) and not np.array_equal(a.counts, c.counts)
    sizes = sorted(len(d) for d in ids)
    assert sum(sizes[:10]) <= a.tokens <= sum(sizes[-10:])


def test_dataset_counts_equal_numpy_bincount(tmp_path) -> None:
    out = tmp_path / "p"
    midmix.prepare("p", [str(DEMO / "prose.jsonl")], tokenizer=PYTHIA, seq_len=128, out=out)
    tokens = read_tokens(out).reshape(-1)
    s = UnigramStats.from_dataset(out)
    want = np.bincount(tokens, minlength=len(s.counts))
    want[0] = 0  # the EOS prepare inserted is not counted
    assert np.array_equal(s.counts, want) and s.tokens == int(want.sum())
    path = tmp_path / "s.npz"
    s.save(path)
    back = UnigramStats.load(path)
    assert np.array_equal(back.counts, s.counts) and back.name == "p" and back.tokenizer_sha256


def test_an_eos_id_in_the_documents_own_text_is_counted_not_dropped(tmp_path) -> None:
    """Where a document's text holds the EOS token itself, its occurrences cannot be told from the inserted
    ones: both are counted (and said so) instead of real tokens being dropped with the inserted ones."""
    docs = ["plain text one", "text quoting <|endoftext|> the token", "plain text two"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs if "<|" not in d))
    for src, name in ((tmp_path / "in.jsonl", "quoting"), (clean, "clean")):
        midmix.prepare(name, [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / name, register=False)
    quoting, plain = UnigramStats.from_dataset(tmp_path / "quoting"), UnigramStats.from_dataset(tmp_path / "clean")
    tokens = read_tokens(tmp_path / "quoting").reshape(-1)
    assert read_manifest(tmp_path / "quoting").counts.special_in_text == 1
    assert quoting.meta["kept_ids"] == [0] and quoting.counts[0] == np.count_nonzero(tokens == 0) >= 2
    assert np.array_equal(quoting.counts, np.bincount(tokens, minlength=len(quoting.counts)))
    assert plain.meta["excluded_ids"] == [0] and plain.counts[0] == 0
    raw = UnigramStats.from_files([clean], PYTHIA)
    n = read_tokens(tmp_path / "clean").size
    assert plain.tokens == n - np.count_nonzero(read_tokens(tmp_path / "clean") == 0) <= raw.tokens


def test_mixture_aware_stats_agree_with_a_built_mix(tmp_path) -> None:
    srcs = prepare_sources(tmp_path, seq_len=64)
    rep = mix_of(
        [(n, str(p)) for n, p in srcs.items()], [("fill", 0, [("prose", 0.8), ("code", 0.2)], False)], tmp_path / "mix"
    ).to_dict()
    built = UnigramStats.from_dataset(tmp_path / "mix")
    prose, code = UnigramStats.from_dataset(srcs["prose"]), UnigramStats.from_dataset(srcs["code"])
    exact = prose.mix(code, 0.2)
    agree = proximity(built, exact)
    # The mix holds every prose sample and a fifth's worth of code: only code is subsampled.
    assert rep["passes"]["prose"] == pytest.approx(1.0)
    assert agree["jsd"] < 0.01 and agree["cosine"] > 0.99
    # …and it is far closer to the exact mixture than to either source alone.
    assert agree["jsd"] < proximity(built, prose)["jsd"] / 3
    assert agree["jsd"] < proximity(built, code)["jsd"] / 3


def test_cli_stats_matrix_and_plots(tmp_path) -> None:
    srcs = prepare_sources(tmp_path, seq_len=64)
    r = CliRunner().invoke(main, ["stats", f"prose={srcs['prose']}", "--out", str(tmp_path / "p.npz"), "--top", "5"])
    assert r.exit_code == 0, r.output
    assert "entropy" in r.output and "distinct ids" in r.output
    assert "'.'" in r.output or "','" in r.output  # top tokens, decoded
    assert (tmp_path / "p.npz").exists()
    r = CliRunner().invoke(
        main,
        [
            "proximity",
            "--matrix",
            "--target",
            f"prose={srcs['prose']}",
            "--candidates",
            f"code={srcs['code']},raw={DEMO / 'prose.jsonl'}",
            "--tokenizer",
            str(PYTHIA),
            "--json",
            str(tmp_path / "m.json"),
            "--csv",
            str(tmp_path / "m.csv"),
            "--plot",
            str(tmp_path / "m.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())["matrix"]
    assert m["prose"]["prose"]["combined"] == 1.0
    # Counted from the raw file and from the prepared dataset: the same text, the same statistics.
    assert m["prose"]["raw"]["jsd"] < 1e-6
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 1 + 9
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(
        main,
        [
            "proximity",
            "--target",
            f"prose={srcs['prose']}",
            "--base",
            f"p={srcs['prose']}",
            "--candidates",
            f"code={srcs['code']}",
            "--mix",
            "math=0.1",
        ],
    )
    assert r.exit_code != 0 and "not --candidates" in r.output


@needs_shared()
def test_study_pa_ordering_on_shared_corpora(tmp_path) -> None:
    """The math mix has a higher PA toward GSM8K than the code mix; the code mix the highest toward pycode."""
    c = SHARED / "corpora"
    out = tmp_path / "pa.json"
    r = CliRunner().invoke(
        main,
        [
            "proximity",
            "--tokenizer",
            str(PYTHIA),
            "--target",
            f"gsm8k={SHARED / 'sft' / 'gsm8k.parquet'}",
            "--target",
            f"pycode={SHARED / 'sft' / 'pycode.parquet'}",
            "--base",
            f"c4={c / 'c4_like.parquet'}",
            "--candidates",
            f"math={c / 'math_like.parquet'},starcoder={c / 'starcoder_like.parquet'}",
            "--mix",
            "math=0.12",
            "--mix",
            "starcoder=0.2",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "pa.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    t = json.loads(out.read_text())["targets"]
    assert t["gsm8k"]["math=0.12+c4"]["pa"] > t["gsm8k"]["starcoder=0.2+c4"]["pa"]
    pycode = {k: v["pa"] for k, v in t["pycode"].items()}
    assert max(pycode, key=pycode.get) == "starcoder=0.2+c4"
