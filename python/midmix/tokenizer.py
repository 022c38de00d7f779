"""Tokenizers: midmix's exact encoder (the one `prepare` uses) and where a tokenizer spec points."""

from __future__ import annotations

import os
import re
from pathlib import Path

from midmix._core import Tokenizer
from midmix.errors import ConfigError, DatasetError

__all__ = ["Tokenizer", "open_recorded_tokenizer", "resolve_tokenizer"]

# `org/name` as the hub spells repositories.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def open_recorded_tokenizer(path: str | Path, sha256: str, dataset: str | Path) -> Tokenizer:
    """The tokenizer a dataset records, refused when the file is no longer the one it was prepared with
    (its ids would decode to other text)."""
    tok = Tokenizer(path)
    if tok.sha256 != sha256:
        raise DatasetError(
            f"{path}: changed since {dataset} was prepared with it (sha256 {tok.sha256[:12]}…, "
            f"recorded {sha256[:12]}…): restore it, or pass --tokenizer to decode with another"
        )
    return tok


def resolve_tokenizer(spec: str | os.PathLike[str]) -> Path:
    """A tokenizer.json path, a directory holding one, or (online) a hub id `org/name`. Anything that is not
    a hub id's shape (more than one `/`, a file suffix, a leading `.`, `/` or `~`) is a local path, and a
    missing one is an error naming it, not a hub lookup."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "tokenizer.json").exists():
            return path / "tokenizer.json"
        raise ConfigError(f"{text}: a directory without a tokenizer.json")
    if path.exists():
        return path
    if not HUB_ID.fullmatch(text) or path.suffix:
        raise ConfigError(
            f"{text}: no such tokenizer file (give a tokenizer.json, a directory holding one, or a "
            "hub id such as EleutherAI/pythia-70m)"
        )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ConfigError(f"{text} is not a file; hub ids need `huggingface_hub` installed") from e
    try:  # offline: the local hub cache only, not a minute of retries
        return Path(hf_hub_download(text, "tokenizer.json", local_files_only=not _hub_reachable()))
    except Exception as e:  # offline, no such repo, no tokenizer.json: one line, not the hub's traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{text}: not a local file, and the hub did not give its tokenizer.json ({type(e).__name__}: {first[:200]})"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
