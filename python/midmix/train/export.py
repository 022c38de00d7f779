"""A finished run as a Hugging Face model directory: `midmix export-model RUN --out DIR`.

The directory holds the GPT-NeoX model (`save_pretrained`, safetensors), the tokenizer the training
data was prepared with (a `PreTrainedTokenizerFast` over its tokenizer.json, copied byte for byte) and
`midmix_export.json`, which names the run, checkpoint and step it came from. `AutoModelForCausalLM` and
`AutoTokenizer.from_pretrained(DIR)` load it, and so does lm-evaluation-harness (`--model hf`).

The architecture is rebuilt from the run's `config.yaml` exactly as training built it, and the weights
are loaded strictly from the checkpoint. The tokenizer is the one recorded in the training data's
`midmix.json`: used only when its sha256 is the recorded one, from where it was recorded or from an
explicit `tokenizer` path. Everything is written into a temporary directory next to `out`, renamed into
place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from midmix.errors import ConfigError, MidmixError
from midmix.manifest import MANIFEST_FILE, Manifest, MixManifest, TokenizerInfo, read_manifest
from midmix.train import config as cfgmod
from midmix.train.recipe_loaders import DatasetInfo, dataset_info

EXPORT_FILE = "midmix_export.json"


@dataclass(frozen=True)
class ExportedModel:
    """What `export_model` wrote, as recorded in `midmix_export.json`."""

    out: str
    run: str
    run_name: str
    completed: bool  # the run wrote summary.json
    checkpoint: str
    step: int | None  # optimizer steps (batches) the checkpoint had trained
    samples: int | None
    tokens: int | None
    arch: str
    vocab_size: int  # the model's embedding rows (the tokenizer's vocabulary may be smaller)
    train_data: str
    train_seq_len: int
    tokenizer: str  # the file copied
    tokenizer_sha256: str
    tokenizer_vocab_size: int
    eos_id: int | None
    bos_id: int | None
    midmix_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def locate(run: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(run directory, checkpoint file) for a run directory (its latest checkpoint) or a checkpoint file
    inside one (`RUN/checkpoints/ep0-ba100-rank0.pt`)."""
    path = Path(run)
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory or checkpoint file")
    if path.is_dir() and (path / "config.yaml").exists():
        folder = path / "checkpoints"
        latest = folder / "latest-rank0.pt"
        if not folder.is_dir():
            raise ConfigError(f"{path}: the run has no checkpoints/ (was it trained with checkpoint.enabled: false?)")
        if not latest.exists():
            saved = sorted(p.name for p in folder.glob("ep*-ba*-rank0.pt"))
            raise ConfigError(
                f"{latest}: missing (saved there: {', '.join(saved) or 'nothing'}); name a checkpoint file instead"
            )
        return path, latest.resolve()
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints" or not (run_dir / "config.yaml").exists():
        raise ConfigError(
            f"{path}: neither a run directory (config.yaml and checkpoints/) nor a checkpoint file in "
            "one (RUN/checkpoints/*.pt): the run's config.yaml gives the model's architecture"
        )
    return run_dir, path.resolve()


def load_recipe(run_dir: Path) -> cfgmod.TrainConfig:
    path = run_dir / "config.yaml"
    try:
        return cfgmod.from_dict(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the run's recipe ({e})") from e
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checked_tokenizer(recorded: TokenizerInfo, where: Path, given: str | os.PathLike[str] | None) -> Path:
    """The tokenizer.json to export: `given` (a file or a directory holding tokenizer.json) or the
    recorded path, either way only with the sha256 recorded in `where` (a midmix.json)."""
    if given is not None:
        path = Path(given)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"--tokenizer {given}: no such file")
        sha = _sha256(path)
        if sha != recorded.sha256:
            raise ConfigError(
                f"--tokenizer {path}: sha256 {sha} is not the {recorded.sha256} recorded in {where} "
                "(the training data was prepared with another tokenizer)"
            )
        return path
    path = Path(recorded.path)
    if not path.is_file():
        raise ConfigError(
            f"the tokenizer recorded in {where}, {path}, is gone: pass --tokenizer PATH to a copy of it "
            f"(sha256 {recorded.sha256})"
        )
    sha = _sha256(path)
    if sha != recorded.sha256:
        raise ConfigError(
            f"the tokenizer recorded in {where}, {path}, has changed since the data was prepared "
            f"(sha256 {sha}, recorded {recorded.sha256}): pass --tokenizer PATH to the original"
        )
    return path


def special_ids(manifest: Manifest, tokenizer: Path) -> tuple[int | None, int | None]:
    """(EOS, BOS) ids the training documents were wrapped in. A mix records them in its sources'
    manifests; when none is readable, the tokenizer's end-of-text (prepare's default) and no BOS."""
    if not isinstance(manifest, MixManifest):
        return manifest.eos_id, manifest.bos_id
    for source in manifest.source_info:
        try:
            found = read_manifest(Path(source.path))
        except MidmixError:
            continue
        if found is not None and not isinstance(found, MixManifest):
            return found.eos_id, found.bos_id
    from midmix.tokenizer import Tokenizer

    return Tokenizer(tokenizer).eos_id, None


def _position(state: dict[str, Any], checkpoint: Path) -> tuple[int | None, int | None, int | None]:
    """(batches, samples, tokens) trained at the checkpoint: from its timestamp, else (weights-only
    checkpoints have none) the batch count in Composer's file name `ep{E}-ba{B}-rank{R}.pt`."""
    ts = state.get("timestamp")
    ts = ts.get("Timestamp", ts) if isinstance(ts, dict) else None
    if isinstance(ts, dict) and isinstance(ts.get("batch"), int):
        return int(ts["batch"]), ts.get("sample"), ts.get("token")
    name = checkpoint.name
    if "-ba" in name:
        digits = name.split("-ba", 1)[1].split("-", 1)[0]
        if digits.isdigit():
            return int(digits), None, None
    return None, None, None


def _contains(outer: Path, inner: Path) -> bool:
    outer, inner = outer.resolve(), inner.resolve()
    return outer == inner or outer in inner.parents


def _publish(staged: Path, out: Path) -> None:
    """Move the complete `staged` directory to `out`, replacing what was there."""
    if not out.exists():
        staged.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    staged.rename(out)
    shutil.rmtree(old)


def _train_data(cfg: cfgmod.TrainConfig, recipe: Path) -> DatasetInfo:
    try:
        return dataset_info(cfg.data.train.path, "data.train")
    except MidmixError as e:
        raise type(e)(
            f"{recipe}: {e} (the tokenizer is read from the training data's {MANIFEST_FILE}; relative "
            "paths are relative to where the run was trained)"
        ) from e


def export_model(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> ExportedModel:
    """Write run `run` (a run directory, for its latest checkpoint, or one of its checkpoint files) to
    `out` as a Hugging Face model directory; see the module's docstring."""
    from transformers import GPTNeoXForCausalLM, PreTrainedTokenizerFast

    from midmix import __version__
    from midmix.train.models import CausalLM, load_weights, model_config, read_checkpoint

    out = Path(out)
    run_dir, checkpoint = locate(run)
    cfg = load_recipe(run_dir)
    info = _train_data(cfg, run_dir / "config.yaml")
    recorded = info.manifest.tokenizer
    tok_path = checked_tokenizer(recorded, info.path / MANIFEST_FILE, tokenizer)
    if out.exists():
        if not overwrite:
            raise ConfigError(f"{out} exists: pass --overwrite to replace it")
        if not out.is_dir() or out.is_symlink() or not (out / EXPORT_FILE).is_file():
            # Only a previous export-model output is replaced: never a run, its checkpoints or any other directory.
            raise ConfigError(
                f"{out} exists and is not an export-model output (it has no {EXPORT_FILE}): --overwrite "
                "only replaces one; choose another output directory"
            )
        for what, p in (("run", run_dir), ("tokenizer", tok_path), ("training data", info.path)):
            if _contains(out, p):
                raise ConfigError(f"--out {out} holds the {what} ({p}): choose another output directory")

    state = read_checkpoint(checkpoint, "checkpoint")
    step, samples, tokens = _position(state, checkpoint)
    eos_id, bos_id = special_ids(info.manifest, tok_path)
    config = model_config(
        cfg.model.arch, cfg.model.init_from, cfg.model.vocab_size, cfg.model.positions_for(info.seq_len)
    )
    # Generation stops at the EOS the documents ended with; a packed document starts after the EOS of
    # the one before, so that is also the BOS when the data had none of its own.
    config.eos_token_id = eos_id
    config.bos_token_id = bos_id if bos_id is not None else eos_id
    model = CausalLM(GPTNeoXForCausalLM(config))
    load_weights(model, checkpoint, "checkpoint", state)
    del state

    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_path), model_max_length=config.max_position_embeddings)
    if eos_id is not None:
        hf_tok.eos_token = hf_tok.convert_ids_to_tokens(eos_id)
    if config.bos_token_id is not None:
        hf_tok.bos_token = hf_tok.convert_ids_to_tokens(config.bos_token_id)

    result = ExportedModel(
        out=str(out.resolve()),
        run=str(run_dir.resolve()),
        run_name=cfg.run_name,
        completed=(run_dir / "summary.json").exists(),
        checkpoint=str(checkpoint),
        step=step,
        samples=samples,
        tokens=tokens,
        arch=cfg.model.arch,
        vocab_size=config.vocab_size,
        train_data=str(info.path.resolve()),
        train_seq_len=info.seq_len,
        tokenizer=str(tok_path.resolve()),
        tokenizer_sha256=recorded.sha256,
        tokenizer_vocab_size=recorded.vocab_size,
        eos_id=eos_id,
        bos_id=config.bos_token_id,
        midmix_version=__version__,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if staged.exists():
        shutil.rmtree(staged)  # left by an export of this process id that was killed
    staged.mkdir()
    try:
        model.model.save_pretrained(staged, safe_serialization=True)
        hf_tok.save_pretrained(staged)
        # The very bytes the data was tokenized with (save_pretrained re-serializes them): the
        # directory is itself a tokenizer midmix accepts, with the recorded sha256.
        shutil.copyfile(tok_path, staged / "tokenizer.json")
        (staged / EXPORT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        # safetensors writes the weights owner-only; give every file the mode the umask gives ours.
        mode = (staged / EXPORT_FILE).stat().st_mode & 0o777
        for f in staged.iterdir():
            f.chmod(mode)
        _publish(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return result
