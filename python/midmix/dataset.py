"""Datasets: where a name or path points, what `midmix.json` and `index.json` say, and reading samples.

Prepared datasets and mixes are registered by name in a data root — `--data-root`, else
`$MIDMIX_DATA_ROOT`, else `./data` — whose `registry.json` maps each name to its directory, so later
commands (and recipes) can say `c4` instead of a path. `Dataset.open` takes either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from midmix._core import SampleReader, TokenReader
from midmix.errors import ConfigError, DatasetError
from midmix.manifest import MANIFEST_FILE, Manifest, MixManifest, read_manifest

REGISTRY_FILE = "registry.json"
INDEX_FILE = "index.json"

PathLike = str | os.PathLike[str]

__all__ = ["Dataset", "SampleReader", "TokenReader", "data_root", "is_dataset", "lookup", "register",
           "registered", "resolve"]


# -- the data root --------------------------------------------------------------------------------------

def data_root(explicit: PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("MIDMIX_DATA_ROOT") or "data")


def registered(root: Path) -> dict[str, str]:
    """Every name in the root's registry and the directory it points to."""
    path = root / REGISTRY_FILE
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable registry ({e})") from e
    if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
        raise ConfigError(f"{path}: expected an object mapping names to directories")
    return entries


def register(name: str, directory: Path, root: Path) -> None:
    """Record `name` → `directory` (written to a temporary file, then renamed into place)."""
    root.mkdir(parents=True, exist_ok=True)
    entries = registered(root)
    entries[name] = str(Path(directory).resolve())
    tmp = root / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / REGISTRY_FILE)


def is_dataset(directory: Path) -> bool:
    """MDS shards (index.json), or an index mix (a midmix.json over other datasets' shards)."""
    return (Path(directory) / INDEX_FILE).is_file() or (Path(directory) / MANIFEST_FILE).is_file()


def lookup(name: str, root: Path) -> Path:
    """The directory registered as `name`, or `root/name` when that is a dataset."""
    entries = registered(root)
    if name in entries:
        path = Path(entries[name])
        if not is_dataset(path):
            raise DatasetError(f"'{name}' is registered under data root {root} as {path}, "
                               f"which no longer holds a dataset ({INDEX_FILE} and {MANIFEST_FILE} missing)")
        return path
    if is_dataset(root / name):
        return root / name
    known = sorted(set(entries) | {p.name for p in root.glob("*") if is_dataset(p)})
    raise ConfigError(f"no dataset named '{name}' under data root {root}; known: {', '.join(known) or '(none)'}")


def resolve(spec: PathLike, root: PathLike | None = None) -> Path:
    """A dataset directory, or the one registered as the name `spec`."""
    path = Path(spec)
    if is_dataset(path):
        return path
    text = str(spec)
    if os.sep in text or path.suffix:
        raise DatasetError(f"no dataset at {text} ({INDEX_FILE} and {MANIFEST_FILE} missing); run `midmix prepare` or "
                           "`midmix build-mix` first")
    return lookup(text, data_root(root))


# -- one dataset -----------------------------------------------------------------------------------------

class Dataset:
    """A prepared dataset or a mix on disk: its manifest, its MDS index, and its samples."""

    def __init__(self, path: Path, manifest: Manifest | None, index: dict[str, Any] | None) -> None:
        self.path = path
        self.manifest = manifest
        self.index = index

    @classmethod
    def open(cls, spec: PathLike, data_root: PathLike | None = None) -> Dataset:
        """A dataset by path, or by the name it is registered under."""
        path = resolve(spec, data_root)
        manifest = read_manifest(path)
        if isinstance(manifest, MixManifest) and manifest.is_index:
            return cls(path, manifest, None)  # no shards of its own: it reads its sources'
        index_path = path / INDEX_FILE
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{index_path}: not a readable MDS index ({e})") from e
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
            raise DatasetError(f"{index_path}: not an MDS index (no 'shards' list)")
        return cls(path, manifest, index)

    @property
    def name(self) -> str:
        m = self.manifest
        return m.name if m is not None and m.kind == "prepared" else self.path.name

    @property
    def kind(self) -> str:
        """`prepared`, `mix`, or `mds` for a dataset midmix did not write."""
        return self.manifest.kind if self.manifest is not None else "mds"

    def require_manifest(self, what: str) -> Manifest:
        if self.manifest is None:
            raise DatasetError(f"{what}: {self.path} has no midmix.json; only midmix-written datasets can be used here")
        return self.manifest

    @property
    def index_mix(self) -> MixManifest | None:
        """The manifest when this is an index mix (positions over its sources, no shards of its own)."""
        m = self.manifest
        return m if isinstance(m, MixManifest) and m.is_index else None

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The MDS shards listed in index.json (none for an index mix)."""
        return self.index["shards"] if self.index is not None else []

    @property
    def num_samples(self) -> int:
        """Samples in the dataset, from its index.json (any sample layout, fixed-size or not), or the
        positions of an index mix."""
        if (mix := self.index_mix) is not None:
            return mix.total_samples
        try:
            return sum(int(s["samples"]) for s in self.shards)
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{self.path / INDEX_FILE}: a shard entry has no valid 'samples' ({e})") from e

    @cached_property
    def samples(self) -> SampleReader:
        """Random access to whole samples as {column: value}, shards kept mapped between reads."""
        return SampleReader(self.path)

    def sample(self, i: int) -> dict[str, Any]:
        return self.samples[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader = self.samples
        return (reader[i] for i in range(len(reader)))

    def tokens(self) -> TokenReader:
        """Fast batched access to a pretraining dataset's or a mix's fixed-size `tokens` (+ `source`)."""
        return TokenReader(self.path)
