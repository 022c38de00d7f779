"""Tokenizers: midmix's exact encoder (the one `prepare` uses) and where a tokenizer spec points."""

from __future__ import annotations

from pathlib import Path

from midmix._core import Tokenizer
from midmix.errors import ConfigError, DatasetError

__all__ = ["Tokenizer", "open_recorded_tokenizer", "resolve_tokenizer"]


def open_recorded_tokenizer(path: str | Path, sha256: str, dataset: str | Path) -> Tokenizer:
    """The tokenizer a dataset records, refused when the file is no longer the one it was prepared with
    (its ids would decode to other text)."""
    tok = Tokenizer(path)
    if tok.sha256 != sha256:
        raise DatasetError(f"{path}: changed since {dataset} was prepared with it (sha256 {tok.sha256[:12]}…, "
                           f"recorded {sha256[:12]}…): restore it, or pass --tokenizer to decode with another")
    return tok


def resolve_tokenizer(spec: str | Path) -> Path:
    """A tokenizer.json path, a directory holding one, or (online) a hub id."""
    text = str(spec)
    path = Path(text)
    if path.is_dir() and (path / "tokenizer.json").exists():
        return path / "tokenizer.json"
    if path.exists() or "/" not in text or text.endswith(".json"):
        return path
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ConfigError(f"{text} is not a file; hub ids need `huggingface_hub` installed") from e
    return Path(hf_hub_download(text, "tokenizer.json"))
