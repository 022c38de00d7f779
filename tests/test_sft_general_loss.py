"""The paper's form of the general loss during SFT (`sft.general_loss: documents`): each held-out
document an SFT example with an empty prompt (document + EOS, cut to the SFT length, one per example,
padded per batch), prepared by `prepare --mode sft --prompt-field ''`; its in-loop loss checked against
Hugging Face's own loss over the `tokenizers` library's ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import midmix
import pytest
import yaml
from conftest import PYTHIA, ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

DEMO = ROOT / "demo" / "data"
SFT_SEQ, EVAL = 48, 12


def general_docs() -> list[str]:
    """Held-out prose of many lengths: whole documents (cut by SFT_SEQ) and short heads of others."""
    texts = [json.loads(line)["text"] for line in (DEMO / "prose_val.jsonl").read_text().splitlines()[:EVAL]]
    return [t if i % 3 == 0 else t[: 7 * (i + 1)] for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from midmix.experiment.grid import load
    from midmix.experiment.run import Experiment

    d = tmp_path_factory.mktemp("general-loss")
    with open(d / "general_val.jsonl", "w") as f:
        for i, text in enumerate(general_docs()):
            f.write(json.dumps({"text": text}) + "\n")
            if i == 4:
                f.write(json.dumps({"text": ""}) + "\n")  # an empty document is no example (and counted)
    grid = {
        "name": "docs",
        "out": str(d / "out"),
        "data_dir": str(DEMO),
        "tokenizer": str(PYTHIA),
        "arch": "tiny",
        "device": "cpu",
        "seq_len": 32,
        "global_batch": 4,
        "steps": 4,
        "eval_samples": EVAL,
        "base": "prose.jsonl",
        "general_val": str(d / "general_val.jsonl"),
        "sft": {
            "targets": {"gsm8k": {"file": "gsm8k.jsonl", "train_examples": 8, "val_examples": 4}},
            "epochs": 1,
            "seq_len": SFT_SEQ,
            "global_batch": 4,
            "general_loss": "documents",
        },
    }
    (d / "grid.yaml").write_text(yaml.safe_dump(grid))
    exp = Experiment(load(d / "grid.yaml"))
    exp.prepare()
    return d, exp


def oracle_ids() -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(PYTHIA))
    return [(tok.encode(t, add_special_tokens=False).ids + [0])[:SFT_SEQ] for t in general_docs()]


def test_documents_form_is_one_unmasked_example_per_document(experiment) -> None:
    from midmix.loaders import SftDataset

    d, exp = experiment
    data = exp.data / "general_val-docs"
    m = midmix.read_manifest(data)
    assert m.mode == "sft" and m.sft.prompt_field == "" and m.sft.response_field == "text"
    assert m.counts.skipped == {"empty_document": 1}
    examples = list(SftDataset(data))
    want = oracle_ids()
    assert [ids.tolist() for ids, _ in examples] == want
    assert all((labels == ids).all() for ids, labels in examples)  # an empty prompt: every token scored
    assert len({len(w) for w in want}) > 4 and max(map(len, want)) == SFT_SEQ  # lengths vary; long ones cut
    # The SFT runs' forgetting set is that data; the packed form stays the default.
    r = exp.sft_recipe("base", "gsm8k", 1, 1e-3)
    assert r["data"]["eval"]["general"] == {"path": str(data), "kind": "sft", "max_samples": EVAL}
    assert r["callbacks"]["forgetting"]["eval"] == "general"
    exp.g.sft.general_loss = "packed"
    try:
        assert exp.sft_recipe("base", "gsm8k", 1, 1e-3)["data"]["eval"]["general"] == {
            "path": str(exp.data / "general_val"),
            "max_samples": EVAL,
        }
    finally:
        exp.g.sft.general_loss = "documents"


def test_grid_refuses_an_unknown_general_loss_form(tmp_path) -> None:
    from midmix.experiment.grid import load

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"sft": {"targets": {"t": {"file": "x.jsonl"}}, "general_loss": "perdoc"}}))
    with pytest.raises(midmix.ConfigError, match=r"g\.yaml: sft\.general_loss: 'perdoc' is not one of packed, docu"):
        load(path)


def test_in_loop_general_loss_equals_hf_loss_over_each_document(experiment) -> None:
    """forgetting/loss at the SFT run's start (before any step) is the mean cross entropy over every
    next-token prediction of every document, as Hugging Face computes it one document at a time."""
    from midmix.run_report import read_metrics
    from midmix.train.models import neox_config
    from transformers import GPTNeoXForCausalLM

    d, exp = experiment
    torch.manual_seed(11)
    start = d / "start-model"
    GPTNeoXForCausalLM(neox_config("tiny")).save_pretrained(start)
    r = exp.sft_recipe("base", "gsm8k", 1, 1e-3)
    r["model"]["init_from"] = str(start)  # (the grid's base run is not trained here)
    r["data"]["eval_batch_size"] = 5  # batches of 5, 5 and 1 examples: padding differs per batch
    (d / "sft.yaml").write_text(yaml.safe_dump(r))
    proc = subprocess.run(
        [sys.executable, "-m", "midmix.cli", "train", str(d / "sft.yaml")],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(d)},
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (step, _, got), *_ = read_metrics(Path(r["run_dir"]) / "metrics.jsonl")["forgetting/loss"]
    assert step == 0

    model = GPTNeoXForCausalLM.from_pretrained(start).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in oracle_ids():
            x = torch.tensor([ids])
            total += float(model(input_ids=x, labels=x).loss) * (len(ids) - 1)  # HF: mean over len - 1
            count += len(ids) - 1
    assert got == pytest.approx(total / count, rel=1e-5, abs=1e-5)
