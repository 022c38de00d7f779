"""Datasets: where a name or path points, what `midmix.json` and `index.json` say, and reading samples.

Prepared datasets and mixes are registered by name in a data root — `--data-root`, else
`$MIDMIX_DATA_ROOT`, else `./data` — whose `registry.json` maps each name to its directory, so later
commands (and recipes) can say `c4` instead of a path. `Dataset.open` takes either.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from midmix import _core
from midmix._core import SampleReader, TokenReader
from midmix.errors import ConfigError, DatasetError
from midmix.manifest import MANIFEST_FILE, Manifest, MixManifest, manifest_from_json, read_manifest

REGISTRY_FILE = "registry.json"
INDEX_FILE = "index.json"

PathLike = str | os.PathLike[str]

__all__ = [
    "Dataset",
    "Registered",
    "SampleReader",
    "TokenReader",
    "check_name",
    "data_root",
    "is_dataset",
    "lookup",
    "register",
    "registered",
    "resolve",
    "unregister",
]


# -- the data root --------------------------------------------------------------------------------------


def data_root(explicit: PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("MIDMIX_DATA_ROOT") or "data")


@dataclass(frozen=True)
class Registered:
    """What a registry entry records: the directory, and what it held when registered (its kind and
    fingerprint; None in registries written before fingerprints)."""

    path: str
    kind: str | None = None
    fingerprint: str | None = None


def registered(root: Path) -> dict[str, Registered]:
    """Every name in the root's registry and what it points to."""
    path = root / REGISTRY_FILE
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable registry ({e})") from e
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected an object mapping names to directories")
    out: dict[str, Registered] = {}
    for name, entry in entries.items():
        if isinstance(entry, str):  # a registry from before fingerprints
            out[name] = Registered(entry)
        elif (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and all(isinstance(entry.get(k), (str, type(None))) for k in ("kind", "fingerprint"))
        ):
            out[name] = Registered(entry["path"], entry.get("kind"), entry.get("fingerprint"))
        else:
            raise ConfigError(f"{path}: entry '{name}' is not a directory or a {{path, kind, fingerprint}} object")
    return out


def check_name(name: str, directory: PathLike, root: Path) -> None:
    """Refuse, before any work, to give `name` to `directory` when it already names another one, or when
    `directory` is registered under another name: a name means one directory and a directory one name, and
    either change would silently change what every later command (and every mix over it) reads."""
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name or name != name.strip():
        raise ConfigError(
            f"{name!r} is not a dataset name: use letters, digits, '-', '_' or '.', without '/' or surrounding spaces"
        )
    entries = registered(root)
    entry = entries.get(name)
    target = Path(directory).resolve()
    if entry is not None and Path(entry.path) != target:
        raise ConfigError(
            f"'{name}' already names {entry.path} (a {entry.kind or 'dataset'}) under data root {root}; give this "
            f"output another name (prepare's NAME, build-mix's, merge's and export's --name), or forget the old "
            f"one with `midmix rm {name}` first"
        )
    others = [n for n, e in entries.items() if n != name and Path(e.path) == target]
    if others:
        raise ConfigError(
            f"{target} is registered as '{others[0]}': replacing it would change what '{others[0]}' (and every mix "
            f"over it) reads. Write '{name}' to another directory, or `midmix rm {others[0]}` first"
        )


def register(name: str, directory: Path, root: Path) -> None:
    """Record `name` → `directory` with its kind and fingerprint (written to a temporary file, then
    renamed into place). A name already given to another directory is refused (`check_name`)."""
    check_name(name, directory, root)
    manifest = read_manifest(directory)
    entries = registered(root)
    entries[name] = Registered(
        str(Path(directory).resolve()),
        manifest.kind if manifest is not None else None,
        manifest.fingerprint if manifest is not None else None,
    )
    _write_registry(root, entries)


def unregister(name: str, root: Path) -> Registered:
    """Forget `name` (its directory is left as it is). Returns what it pointed to."""
    entries = registered(root)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "(none)"
        raise ConfigError(f"no name '{name}' in {root / REGISTRY_FILE}; registered: {known}")
    gone = entries.pop(name)
    _write_registry(root, entries)
    return gone


def _write_registry(root: Path, entries: dict[str, Registered]) -> None:
    """Written to a temporary file, then renamed into place: a reader never sees half a registry."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({n: dataclasses.asdict(e) for n, e in entries.items()}, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / REGISTRY_FILE)


def is_dataset(directory: Path) -> bool:
    """MDS shards (index.json), or an index mix (a midmix.json over other datasets' shards): the core's
    answer (`midmix_core::dataset::is_dataset`)."""
    return _core.is_dataset(Path(directory))


def lookup(name: str, root: Path) -> Path:
    """The directory registered as `name`, or `root/name` when that is a dataset. A name whose directory
    now holds another dataset than the one registered (another fingerprint) is refused."""
    entries = registered(root)
    if name in entries:
        entry = entries[name]
        path = Path(entry.path)
        if not is_dataset(path):
            raise DatasetError(
                f"'{name}' is registered in {root / REGISTRY_FILE} as {path}, "
                f"which no longer holds a dataset ({INDEX_FILE} and {MANIFEST_FILE} missing): "
                f"moved or deleted? `midmix rm {name}`, then register it again where it is now"
            )
        if entry.fingerprint is not None:
            manifest = read_manifest(path)
            now = manifest.fingerprint if manifest is not None else None
            if now != entry.fingerprint:
                raise DatasetError(
                    f"'{name}' is registered in {root / REGISTRY_FILE} for the dataset then at {path}, which now holds "
                    f"another one (fingerprint {now} vs {entry.fingerprint}): it was replaced under another name. "
                    f"Use the path, or `midmix rm {name}`"
                )
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
        _core.open_dataset(path)  # raises what is wrong: a remote URI, nothing there, not a dataset
        raise DatasetError(
            f"no dataset at {text} ({INDEX_FILE} and {MANIFEST_FILE} missing); run `midmix prepare` or "
            "`midmix build-mix` first"
        )
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
        # The one validated open (the core's): midmix.json's checksum, index.json against its recorded
        # hash, counts, columns and shard sizes; an index mix's index files and its sources' identities.
        manifest_text, index_text = _core.open_dataset(path)
        manifest = None if manifest_text is None else manifest_from_json(manifest_text, str(path / MANIFEST_FILE))
        if index_text is None:
            return cls(path, manifest, None)  # an index mix: no shards of its own, it reads its sources'
        index = json.loads(index_text)  # the core has parsed and checked it
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
