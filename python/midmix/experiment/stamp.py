"""What produced a cached stage output, and whether it still matches: the experiment's cache keys.

Each output of a grid (a prepared source, a mix, a training run, unigram statistics) gets a stamp file
recording the facts that determine it: the hashes of the files it read, the options that change its
bytes, the stamps of the outputs it was built from, and a format version per kind. An output is reused
only when the facts it would be built from now equal the recorded ones; otherwise the changed facts are
named. Changing a corpus file, `seq_len` or a seed therefore never reuses stale data.

File hashes are sha256 of the contents. A file whose size and mtime equal those recorded with its hash
is not read again (as make, DVC and Dolma's attribute caches do): re-hashing every corpus on each launch
would cost minutes at 128B tokens.

A lock per output (`locked`) makes concurrent launchers safe: one builds, the others wait, then find the
stamp fresh and skip. It is `flock(2)`: on a cluster the experiment directory must be on a file system
whose locks hold across nodes (local disk, NFSv4, Lustre mounted with `flock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midmix.errors import ConfigError

# Bump the kind's version when what that kind of stage writes changes for the same inputs.
FORMAT = {"prepare": 1, "mix": 1, "train": 1, "stats": 1}


def file_facts(path: Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """{path, size, mtime_ns, sha256} of a file (a directory: of each file under it); `known` is what a
    stamp recorded, whose hash is trusted while size and mtime are unchanged."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path}: not found. A grid's data_dir is relative to the current directory ({Path.cwd()}): "
            "run from the repository root, beside ../shared, or pass data_dir=DIR (a directory with "
            "the grid's corpora/ and sft/ files)"
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        known_files = (known or {}).get("files", {})
        parts = {str(p.relative_to(path)): file_facts(p, known_files.get(str(p.relative_to(path)))) for p in files}
        digest = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in parts.items()}, sort_keys=True).encode())
        return {"path": str(path), "sha256": digest.hexdigest(), "files": parts}
    st = path.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": known["sha256"]}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}


def identity(facts: Any) -> Any:
    """The facts with only what determines the output: a file is its hash (not where it is or when it was
    touched)."""
    if isinstance(facts, dict):
        if "sha256" in facts and "path" in facts:
            return facts["sha256"]
        return {k: identity(v) for k, v in facts.items()}
    if isinstance(facts, list):
        return [identity(v) for v in facts]
    return facts


def fingerprint(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity(facts), sort_keys=True).encode()).hexdigest()


class Stamp:
    """The stamp file of one output: `{kind, fingerprint, complete, facts}`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # torn by a crash: the output it describes is not trusted either
            return None

    def known_files(self) -> dict[str, Any]:
        """The file facts recorded last time, to skip re-hashing unchanged files."""
        s = self.read()
        return (s or {}).get("facts", {}).get("files", {})

    def write(self, kind: str, facts: dict[str, Any], complete: bool) -> str:
        fp = fingerprint(facts)
        write_atomic(
            self.path,
            json.dumps(
                {"kind": kind, "format": FORMAT[kind], "fingerprint": fp, "complete": complete, "facts": facts},
                indent=1,
                sort_keys=True,
            )
            + "\n",
        )
        return fp

    def fingerprint(self) -> str | None:
        """The fingerprint of the output if it is complete, else None."""
        s = self.read()
        return s["fingerprint"] if s and s.get("complete") else None

    def changes(self, kind: str, facts: dict[str, Any]) -> list[str] | None:
        """None when the recorded facts equal `facts`; else what differs, one line each ("no stamp" when
        there is none)."""
        s = self.read()
        if s is None:
            return ["no stamp (never built, or built before midmix recorded what it was built from)"]
        if s.get("kind") != kind or s.get("format") != FORMAT[kind]:
            return [f"format {s.get('kind')} v{s.get('format')} → {kind} v{FORMAT[kind]}"]
        if s.get("fingerprint") == fingerprint(facts):
            return None
        return diff(identity(s.get("facts", {})), identity(facts)) or ["fingerprint"]


def diff(old: Any, new: Any, where: str = "") -> list[str]:
    """The keys whose values differ between two fact trees, as `key: old → new` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{where}.{k}" if where else str(k)
            if k not in old:
                out.append(f"{key}: (none) → {_short(new[k])}")
            elif k not in new:
                out.append(f"{key}: {_short(old[k])} → (none)")
            else:
                out += diff(old[k], new[k], key)
        return out
    return [] if old == new else [f"{where}: {_short(old)} → {_short(new)}"]


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return f"sha256 {v[:12]}…"
    return s if len(s) <= 80 else s[:77] + "…"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` under a temporary name, then rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


@contextlib.contextmanager
def locked(lock_dir: Path, name: str) -> Iterator[None]:
    """Hold the lock of one output for the duration (blocking while another process holds it)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name.replace('/', '~')}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
