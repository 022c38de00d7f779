"""SFT mode: one sample per example, prompt masked with -100, checked on real GSM8K."""

from __future__ import annotations

import json

import midmix
import numpy as np
import pyarrow.parquet as pq
import pytest
import tokenizers
from conftest import PYTHIA, SHARED, needs_shared
from midmix import InputError

GSM8K = SHARED / "sft" / "gsm8k.parquet"


def samples(directory) -> list[dict]:
    n = sum(s["samples"] for s in json.loads((directory / "index.json").read_text())["shards"])
    ds = midmix.Dataset.open(directory)
    return [ds.sample(i) for i in range(n)]


@needs_shared()
@pytest.mark.parametrize("mask", [True, False])
def test_gsm8k_prompt_masking(tmp_path, mask) -> None:
    out = tmp_path / "gsm8k"
    seq_len = 256
    rep = midmix.prepare(
        "gsm8k", [str(GSM8K)], tokenizer=PYTHIA, seq_len=seq_len, out=out, mode="sft", mask_prompt=mask
    ).to_dict()
    table = pq.read_table(GSM8K).to_pylist()
    tok = tokenizers.Tokenizer.from_file(str(PYTHIA))
    got = samples(out)
    assert len(got) == len(table) == rep["counts"]["samples"]
    truncated = 0
    for row, s in zip(table, got, strict=True):
        p = tok.encode(row["prompt"], add_special_tokens=False).ids
        r = tok.encode(row["response"], add_special_tokens=False).ids
        full = p + r + [0]
        truncated += len(full) > seq_len
        full = full[:seq_len]
        assert s["input_ids"].tolist() == full
        labels = [-100] * len(p) + full[len(p) :] if mask else full
        assert s["labels"].tolist() == labels[:seq_len]
        if mask:  # the trained part decodes to the answer, ending "#### N"
            assert tok.decode(s["input_ids"][len(p) :].tolist()).startswith(row["response"][:20])
    assert rep["counts"]["truncated_samples"] == truncated
    assert rep["sft"] == {"prompt_field": "prompt", "response_field": "response", "mask_prompt": mask}


def test_prompt_longer_than_seq_len(tmp_path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"q": "word " * 50, "a": "yes"}) + "\n" + json.dumps({"q": "hi", "a": "yes"}) + "\n")
    kw = dict(mode="sft", prompt_field="q", response_field="a")
    with pytest.raises(InputError, match="prompt alone fills") as err:
        midmix.prepare("s", [str(src)], tokenizer=PYTHIA, seq_len=16, out=tmp_path / "out", **kw)
    assert err.value.line == 1
    rep = midmix.prepare(
        "s", [str(src)], tokenizer=PYTHIA, seq_len=16, out=tmp_path / "out", on_bad_record="skip", **kw
    ).to_dict()
    assert rep["counts"]["skipped"] == {"prompt_too_long": 1} and rep["counts"]["samples"] == 1
    s = midmix.Dataset.open(tmp_path / "out").sample(0)
    assert isinstance(s["labels"], np.ndarray) and (s["labels"] != -100).sum() == 2  # "yes" + EOS
