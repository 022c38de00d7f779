"""`midmix export-model`: a tiny CPU run exported as a Hugging Face model directory loads through
`transformers`' Auto classes with midmix's own logits and tokenization; broken inputs are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import midmix
import pytest
import yaml
from conftest import PYTHIA, mix_of
from trainutil import DEMO, SEQ, STEPS, G, copy_run

torch = pytest.importorskip("torch")
pytest.importorskip("composer")
transformers = pytest.importorskip("transformers")

EARLY = 4  # the first checkpoint of the shared `scheduled` run (one every 4 steps)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "midmix.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )


@pytest.fixture(scope="module")
def run(tiny_runs, train_data, tmp_path_factory) -> dict[str, Path]:
    """A copy of the session's tiny `scheduled` run (over an index mix of prose and code prepared with the
    Pythia tokenizer), and the held-out prose as a prepared set for real batches."""
    d = tmp_path_factory.mktemp("export")
    return {
        "dir": d,
        "run": copy_run(tiny_runs["scheduled"], d / "run"),
        "tokenizer": PYTHIA,
        "data": train_data,
        "val": train_data / "prose_val",
    }


@pytest.fixture(scope="module")
def exported(run) -> Path:
    from midmix.train.export import export_model

    out = run["dir"] / "hf"
    export_model(run["run"], out)
    return out


def midmix_model(run_dir: Path, checkpoint: Path | None = None):
    """The run's model the way midmix loads it: `model.init_from` a run directory or a checkpoint file."""
    from midmix.train.models import build_model

    m = build_model("tiny", str(checkpoint or run_dir), None, 2048, 50277)
    return m.eval()


def real_batch(val: Path) -> torch.Tensor:
    from midmix.registry import Dataset

    tokens, _ = Dataset.open(val).tokens().gather(list(range(8)))
    return torch.from_numpy(tokens.astype("int64"))


def max_logit_diff(a, b, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(ids).logits - b(ids).logits).abs().max())


def test_export_loads_with_auto_classes_and_gives_midmix_logits(run, exported) -> None:
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(exported, output_loading_info=True)
    assert isinstance(hf, transformers.GPTNeoXForCausalLM)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert (exported / "model.safetensors").exists() and not list(exported.glob("*.bin"))
    # The padded vocabulary: config.json says what the embedding holds, not the tokenizer's 50,277.
    config = json.loads((exported / "config.json").read_text())
    assert config["vocab_size"] == 50304 == hf.gpt_neox.embed_in.weight.shape[0] == hf.embed_out.weight.shape[0]
    assert config["eos_token_id"] == 0 and config["bos_token_id"] == 0  # <|endoftext|>, after each document
    ids = real_batch(run["val"])
    ours = midmix_model(run["run"])
    with torch.no_grad():
        diff = float((hf(ids).logits - ours({"input_ids": ids})).abs().max())
    assert diff <= 1e-5, diff
    # Trained weights, not a fresh init: an early checkpoint gives other logits.
    early = midmix_model(run["run"], run["run"] / "checkpoints" / f"ep0-ba{EARLY}-rank0.pt")
    with torch.no_grad():
        assert float((early({"input_ids": ids}) - hf(ids).logits).abs().max()) > 1e-2


def test_a_checkpoint_file_exports_that_step_and_records_where_it_came_from(run, exported, tmp_path) -> None:
    from midmix.train.export import EXPORT_FILE, export_model

    record = json.loads((exported / EXPORT_FILE).read_text())
    assert record["run"] == str(run["run"].resolve()) and record["run_name"] == "run"
    assert record["completed"] and record["step"] == STEPS
    assert record["samples"] == STEPS * G and record["tokens"] == STEPS * G * SEQ
    assert record["checkpoint"] == str((run["run"] / "checkpoints" / f"ep0-ba{STEPS}-rank0.pt").resolve())
    assert record["vocab_size"] == 50304 and record["tokenizer_vocab_size"] == 50277
    ckpt = run["run"] / "checkpoints" / f"ep0-ba{EARLY}-rank0.pt"
    r = export_model(ckpt, tmp_path / "early")
    assert r.step == EARLY and json.loads((tmp_path / "early" / EXPORT_FILE).read_text())["step"] == EARLY
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "early")
    ids = real_batch(run["val"])
    with torch.no_grad():
        diff = float((hf(ids).logits - midmix_model(run["run"], ckpt)({"input_ids": ids})).abs().max())
    assert diff <= 1e-5, diff


def test_a_weights_only_checkpoint_takes_its_step_from_the_file_name(run, tmp_path) -> None:
    """`checkpoint.weights_only` (the SFT recipes') saves no timestamp: the state Composer writes then,
    made here from the run's full checkpoint."""
    from midmix.train.export import export_model

    copy = tmp_path / "run"
    shutil.copytree(run["run"], copy, symlinks=True)
    ckpt = copy / "checkpoints" / f"ep0-ba{STEPS}-rank0.pt"
    full = torch.load(ckpt, weights_only=False)
    torch.save({"state": {k: full["state"][k] for k in ("model", "integrations", "metadata")}}, ckpt)
    r = export_model(copy, tmp_path / "hf")
    assert (r.step, r.samples, r.tokens) == (STEPS, None, None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = real_batch(run["val"])
    with torch.no_grad():
        assert float((hf(ids).logits - midmix_model(run["run"])({"input_ids": ids})).abs().max()) <= 1e-5


def test_auto_tokenizer_encodes_like_the_tokenizers_library(run, exported) -> None:
    from tokenizers import Tokenizer

    tok = transformers.AutoTokenizer.from_pretrained(exported)
    oracle = Tokenizer.from_file(str(PYTHIA))
    texts = [json.loads(line)["text"] for line in (DEMO / "prose_val.jsonl").read_text().splitlines()[:20]]
    texts += ["  leading spaces\tand tabs\n\n", "naïve café — 東京 🚀", "a<|endoftext|>b", ""]
    for text in texts:
        assert tok(text, add_special_tokens=False)["input_ids"] == oracle.encode(text, add_special_tokens=False).ids
        assert tok(text)["input_ids"] == oracle.encode(text).ids
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    # The very bytes the data was prepared with: the directory is a tokenizer midmix accepts as recorded.
    sha = hashlib.sha256((exported / "tokenizer.json").read_bytes()).hexdigest()
    assert (
        sha
        == midmix.read_manifest(run["data"] / "prose").tokenizer.sha256
        == midmix.Tokenizer(exported / "tokenizer.json").sha256
    )


def test_cli_refuses_to_overwrite_unless_asked_and_leaves_no_temporary(run, tmp_path) -> None:
    from midmix.train.export import export_model

    out = tmp_path / "model"
    first = cli("export-model", str(run["run"]), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert f"step {STEPS}" in first.stdout and "vocabulary 50,304 (tokenizer 50,277)" in first.stdout
    again = cli("export-model", str(run["run"]), "--out", str(out))
    assert again.returncode != 0 and "exists: pass --overwrite" in again.stderr
    (out / "stale.txt").write_text("from before")
    export_model(run["run"], out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging directory left behind
    # --overwrite replaces only an earlier export-model output: never the run's directory, its checkpoints
    # or any other directory, which are left as they were.
    checkpoints = run["run"] / "checkpoints"
    before = sorted(p.name for p in checkpoints.iterdir())
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    for target in (run["dir"], run["run"], checkpoints, other):
        with pytest.raises(midmix.ConfigError, match="is not an export-model output"):
            export_model(run["run"], target, overwrite=True)
    assert sorted(p.name for p in checkpoints.iterdir()) == before and before
    assert (other / "thesis.tex").read_text() == "precious"
    # The same from the command line (the case that deleted every checkpoint).
    inside = cli("export-model", str(run["run"]), "--out", str(checkpoints), "--overwrite")
    assert inside.returncode != 0 and "is not an export-model output" in inside.stderr


def _run_on(run: dict[str, Path], tmp_path: Path, data: Path) -> Path:
    """A copy of the trained run whose recipe names training data at `data`."""
    copy = tmp_path / "run"
    shutil.copytree(run["run"], copy, symlinks=True)
    recipe = yaml.safe_load((copy / "config.yaml").read_text())
    recipe["data"]["train"]["path"] = str(data)
    (copy / "config.yaml").write_text(yaml.safe_dump(recipe))
    return copy


def test_broken_inputs_are_refused_with_the_file_named(run, tmp_path) -> None:
    from midmix.train.export import export_model

    out = tmp_path / "out"
    with pytest.raises(midmix.ConfigError, match="no such run directory or checkpoint file"):
        export_model(tmp_path / "nowhere", out)
    no_ckpt = tmp_path / "no-ckpt"
    no_ckpt.mkdir()
    shutil.copyfile(run["run"] / "config.yaml", no_ckpt / "config.yaml")
    with pytest.raises(midmix.ConfigError, match="has no checkpoints/"):
        export_model(no_ckpt, out)
    (no_ckpt / "checkpoints").mkdir()
    (no_ckpt / "checkpoints" / "ep0-ba2-rank0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(midmix.ConfigError, match=r"latest-rank0\.pt: missing \(saved there: ep0-ba2-rank0\.pt\)"):
        export_model(no_ckpt, out)
    with pytest.raises(midmix.ConfigError, match=r"ep0-ba2-rank0\.pt is not a Composer checkpoint"):
        export_model(no_ckpt / "checkpoints" / "ep0-ba2-rank0.pt", out)

    # Data prepared with a tokenizer that is gone since: refused, unless a copy with its sha256 is given.
    gone = tmp_path / "gone.json"
    shutil.copyfile(PYTHIA, gone)
    midmix.prepare(
        "d", [str(DEMO / "prose_val.jsonl")], tokenizer=gone, seq_len=SEQ, out=tmp_path / "d", register=False
    )
    gone.unlink()
    copy = _run_on(run, tmp_path, tmp_path / "d")
    with pytest.raises(
        midmix.ConfigError,
        match=rf"recorded in {tmp_path / 'd' / 'midmix.json'}, {gone}, is gone: "
        "pass --tokenizer PATH",
    ):
        export_model(copy, out)
    other = tmp_path / "other.json"  # the same tokenizer, other bytes: not the file the data was made with
    other.write_text(json.dumps(json.loads(PYTHIA.read_text()), indent=1))
    with pytest.raises(midmix.ConfigError, match=r"--tokenizer .*other\.json: sha256 .* is not the .* recorded in"):
        export_model(copy, out, tokenizer=other)
    shutil.copyfile(PYTHIA, gone.with_name("restored.json"))
    assert export_model(copy, out, tokenizer=gone.with_name("restored.json")).step == STEPS
    # A tokenizer changed in place is refused too.
    gone.write_text(other.read_text())
    with pytest.raises(midmix.ConfigError, match="has changed since the data was prepared"):
        export_model(copy, tmp_path / "out2")
    # A recipe whose architecture is not the checkpoint's (same parameter names, other shapes).
    wrong = tmp_path / "wrong-arch"
    shutil.copytree(run["run"], wrong, symlinks=True)
    recipe = yaml.safe_load((wrong / "config.yaml").read_text())
    recipe["model"]["arch"] = "pythia-14m"
    (wrong / "config.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(midmix.ConfigError, match=rf"checkpoint: .*ep0-ba{STEPS}-rank0\.pt does not match model\.arch"):
        export_model(wrong, tmp_path / "out4")
    # The training data itself gone: the error names the recipe and the key.
    missing = _run_on(run, tmp_path / "m", tmp_path / "no-data")
    with pytest.raises(midmix.MidmixError, match=r"config\.yaml: data\.train\.path"):
        export_model(missing, tmp_path / "out3")
    assert not any((tmp_path / f"out{i}").exists() for i in (2, 3, 4))


def test_a_mix_takes_its_eos_and_bos_from_its_sources(run, tmp_path) -> None:
    from midmix.train.export import special_ids

    src = tmp_path / "bos"  # a source with a BOS of its own, to tell it from the fallback
    midmix.prepare(
        "bos",
        [str(DEMO / "prose_val.jsonl")],
        tokenizer=run["tokenizer"],
        seq_len=SEQ,
        out=src,
        bos="0",
        eos="none",
        register=False,
    )
    mix_of([("bos", str(src))], [("samples", 8, [("bos", 1.0)], False)], tmp_path / "mix", register=False)
    mix = midmix.read_manifest(tmp_path / "mix")
    assert special_ids(mix, run["tokenizer"]) == (None, 0)
    shutil.rmtree(src)  # no source manifest left: the tokenizer's end-of-text, as prepare defaults to
    assert special_ids(mix, run["tokenizer"]) == (0, None)
