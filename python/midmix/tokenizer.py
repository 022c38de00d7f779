"""Tokenizers: midmix's exact encoder (the one `prepare` uses) and where a tokenizer spec points."""

from __future__ import annotations

from pathlib import Path

from midmix._core import Tokenizer
from midmix.errors import ConfigError

__all__ = ["Tokenizer", "resolve_tokenizer"]


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
