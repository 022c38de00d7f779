"""Token ids must equal `tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids` exactly,
for both encoders midmix has, on adversarial text and on every shared corpus end to end."""

from __future__ import annotations

import json
import os

import midmix
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tokenizers
from adversarial import adversarial_texts
from conftest import GPT2, PYTHIA, SHARED, needs_shared, token_stream

TOKENIZERS = {"pythia": PYTHIA, "gpt2": GPT2}
# The Python oracle runs at ~1-2 MB/s, so by default each corpus is checked on a 25 MB prefix of its
# rows (rows are sorted by content hash: a prefix is a random sample). MIDMIX_FULL_CORPUS=1 checks all.
PREFIX_MB = None if os.environ.get("MIDMIX_FULL_CORPUS") else 25


def hf(path):
    return tokenizers.Tokenizer.from_file(str(path))


@pytest.mark.parametrize("encoder", ["fast", "hf"])
@pytest.mark.parametrize("name", ["pythia", "gpt2"])
def test_adversarial_text_ids_equal_hf(name: str, encoder: str) -> None:
    path = TOKENIZERS[name]
    if not path.exists():
        pytest.skip(f"{path} is not present")
    ours = midmix.Tokenizer(path, encoder=encoder)
    assert ours.backend == {"fast": "fastokens", "hf": "hf-tokenizers"}[encoder]
    oracle = hf(path)
    texts = adversarial_texts()
    expected = [e.ids for e in oracle.encode_batch(texts, add_special_tokens=False)]
    got = ours.encode_batch(texts)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"text {i} ({texts[i][:60]!r}…) differs"
    assert ours.encode(texts[0]) == expected[0]


@pytest.mark.parametrize("name", ["pythia", "gpt2"])
def test_added_tokens_in_text_keep_their_ids(name: str) -> None:
    """Texts that cannot contain an added token skip the fast encoder's matcher; texts that do contain
    one (special tokens, Pythia's runs of spaces) must still get its id, in a batch mixing both kinds."""
    path = TOKENIZERS[name]
    if not path.exists():
        pytest.skip(f"{path} is not present")
    texts = [
        "plain prose with single spaces only.",
        "x<|endoftext|>y",
        "<|endoftext|><|endoftext|>",
        "a <|padding|> b",
        "<|endoftext",
        "<|endoftext|",
        "| <| |>",
        "def f():\n    return  1",
        " " * 50 + "wide",
        "tabs\tand  two spaces",
        "\u037e;\u212aK`\u1fef  ",
        "",
    ]
    texts += [t + " tail" for t in texts] + ["prose " * 2000 + "<|endoftext|>" + " end"]
    oracle = hf(path)
    expected = [e.ids for e in oracle.encode_batch(texts, add_special_tokens=False)]
    ours = midmix.Tokenizer(path)
    assert ours.encode_batch(texts) == expected
    assert [ours.encode(t) for t in texts] == expected
    endoftext = oracle.token_to_id("<|endoftext|>")
    assert endoftext in expected[1]  # the special token was matched, not spelled out


def test_tokenizer_facts() -> None:
    t = midmix.Tokenizer(PYTHIA)
    assert t.encode("Hello world") == [12092, 1533]
    assert t.eos_id == 0 and t.vocab_size == 50277
    assert t.decode([12092, 1533]) == "Hello world"
    assert len(t.sha256) == 64


def corpus_files() -> list[str]:
    if not SHARED.exists():
        return []
    return sorted(p.name for p in (SHARED / "corpora").glob("*.parquet"))


@needs_shared()
@pytest.mark.parametrize("name", ["pythia", "gpt2"])
@pytest.mark.parametrize("corpus", corpus_files())
def test_prepared_stream_equals_hf_on_shared_corpus(tmp_path, corpus: str, name: str) -> None:
    """prepare → the packed token stream (samples + kept tail) equals HF ids + EOS per document."""
    path = SHARED / "corpora" / corpus
    table = pq.read_table(path, columns=["text"])
    if PREFIX_MB is not None:
        sizes = np.cumsum(pc.binary_length(table.column("text")).to_numpy())
        rows = int(np.searchsorted(sizes, PREFIX_MB * 1e6)) + 1
        if rows < len(table):
            table = table.slice(0, rows)
            path = tmp_path / corpus
            pq.write_table(table, path)
    tok = TOKENIZERS[name]
    out = tmp_path / "out"
    # As a 1-of-1 task part the tail after the last full sample is kept, so the stream is complete.
    midmix.prepare("c", [str(path)], tokenizer=tok, seq_len=2048, out=out, num_tasks=1, task_index=0)
    stream = token_stream(out)

    texts = table.column("text").to_pylist()
    oracle = hf(tok)
    eos = oracle.token_to_id("<|endoftext|>")
    pos = 0
    for start in range(0, len(texts), 2000):  # in chunks: the oracle's lists are large
        chunk = texts[start : start + 2000]
        for i, enc in enumerate(oracle.encode_batch(chunk, add_special_tokens=False)):
            expected = np.array(enc.ids + [eos], dtype=np.int64)
            got = stream[pos : pos + len(expected)]
            if not np.array_equal(got, expected):
                doc = start + i
                pytest.fail(
                    f"{corpus}/{name}: document {doc} ({texts[doc][:80]!r}) differs at stream "
                    f"position {pos}: {got[:20].tolist()}… vs {expected[:20].tolist()}…"
                )
            pos += len(expected)
    assert pos == len(stream), "the prepared stream has extra tokens"
    rep = json.loads((out / "midmix.json").read_text())
    assert rep["counts"]["documents"] == len(texts)
    assert rep["tokenizer"]["encoder"] == "fastokens"
