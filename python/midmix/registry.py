"""The data root: where prepared datasets are registered by name so later commands find them.

The root is `--data-root`, else `$MIDMIX_DATA_ROOT`, else `./data`. Its `registry.json` maps each
name to the dataset's directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from midmix._core import ConfigError

REGISTRY_FILE = "registry.json"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get("MIDMIX_DATA_ROOT") or "data")


def _load(root: Path) -> dict[str, str]:
    path = root / REGISTRY_FILE
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected an object mapping names to directories")
    return entries


def register(name: str, directory: Path, root: Path) -> None:
    """Record `name` → `directory` (written to a temporary file, then renamed into place)."""
    root.mkdir(parents=True, exist_ok=True)
    entries = _load(root)
    entries[name] = str(directory.resolve())
    tmp = root / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / REGISTRY_FILE)


def lookup(name: str, root: Path) -> Path:
    """The directory registered as `name`, or `root/name` when that is a dataset."""
    entries = _load(root)
    if name in entries:
        return Path(entries[name])
    if (root / name / "index.json").exists():
        return root / name
    known = sorted(set(entries) | {p.name for p in root.glob("*") if (p / "index.json").exists()})
    raise ConfigError(
        f"no dataset named '{name}' under data root {root}; known: {', '.join(known) or '(none)'}"
    )
