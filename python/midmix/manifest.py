"""`midmix.json`, typed: what a prepared dataset or a mix is and how it was made.

The Rust core owns it (`rust/core/src/manifest/`: its types, its one read and write); these classes
mirror those structs field for field, checked against the schema the core emits
(`tests/test_manifest_schema.py`), so `to_dict()` gives back the file's content. A file that lacks a
field, or holds one of the wrong type, is a `DatasetError` naming the file and the field.
`read_manifest` reads it through the core's one validated open (its checksum, `index.json` against
its recorded hash, counts, columns, shard sizes).

`fingerprint` is a dataset's identity: a hash over its shards' content hashes and what its samples
mean (for a mix, its sources' fingerprints and its plan). Outputs written before it have None.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from midmix import _core
from midmix.errors import ConfigError, DatasetError
from midmix.to_dataclass import MACHINE_WRITTEN, to_dataclass

MANIFEST_FILE = "midmix.json"

T = TypeVar("T")


@dataclass(frozen=True)
class TokenizerInfo:
    path: str
    sha256: str
    vocab_size: int
    encoder: str
    fallback_reason: str | None = None


@dataclass(frozen=True)
class SftInfo:
    prompt_field: str
    response_field: str
    mask_prompt: bool


@dataclass(frozen=True)
class Counts:
    documents: int
    tokens: int
    samples: int
    document_tokens: int
    text_bytes: int
    input_bytes: int
    output_bytes: int
    dropped_tail_tokens: int
    truncated_samples: int
    truncated_tokens: int
    label_tokens: int
    skipped: dict[str, int]
    # Tokens of the documents' own text equal to the EOS/BOS id (None: not counted, older midmix).
    special_in_text: int | None = None


@dataclass(frozen=True)
class InputInfo:
    path: str
    format: str
    bytes: int
    xxh3_128: str
    documents: int


@dataclass(frozen=True)
class WriterInfo:
    compression: str | None
    hashes: list[str]
    size_limit: int | None


@dataclass(frozen=True)
class TaskInfo:
    index: int
    count: int
    tail: list[int]
    run_id: str = ""


@dataclass(frozen=True)
class RunInfo:
    elapsed_s: float = 0.0
    threads: int = 0
    text_mb_per_s: float = 0.0


@dataclass(frozen=True)
class PreparedManifest:
    """A `prepare` (or `merge`) output."""

    midmix_version: str
    kind: Literal["prepared"]
    name: str
    mode: Literal["pretrain", "sft"]
    tokenizer: TokenizerInfo
    seq_len: int
    eos_id: int | None
    bos_id: int | None
    dtype: str
    columns: dict[str, str]
    text_field: str | None
    sft: SftInfo | None
    counts: Counts
    inputs: list[InputInfo]
    writer: WriterInfo
    task: TaskInfo | None
    run: RunInfo = field(default_factory=RunInfo)  # outside the checksum: may be missing
    index_xxh3_128: str | None = None
    fingerprint: str | None = None
    checksum: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_absent(dataclasses.asdict(self))


@dataclass(frozen=True)
class SourceInfo:
    name: str
    path: str
    samples: int
    tokens: int
    index_xxh3_128: str
    tokenizer_sha256: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class PhaseReport:
    start_sample: int
    end_sample: int
    ramp: bool
    weights: dict[str, float]
    planned_share: dict[str, float]
    samples: dict[str, int]
    tokens: dict[str, int]


@dataclass(frozen=True)
class IndexFile:
    file: str
    bytes: int
    xxh3_128: str


@dataclass(frozen=True)
class IndexFiles:
    """An index mix's arrays: per position, the source (`mix.source.u8`) and its sample (`mix.sample.u32`)."""

    positions: int
    source: IndexFile
    sample: IndexFile


@dataclass(frozen=True)
class MixManifest:
    """A `build-mix` output: an index over its sources (`form` "index") or MDS shards ("mds")."""

    midmix_version: str
    kind: Literal["mix"]
    sources: list[str]
    source_info: list[SourceInfo]
    seed: int
    seq_len: int
    dtype: str
    tokenizer: TokenizerInfo
    global_batch: int | None
    exact_per_batch: bool
    on_exhaust: str
    total_samples: int
    total_tokens: int
    phases: list[PhaseReport]
    samples_per_source: dict[str, int]
    passes: dict[str, float]
    max_deviation: float
    columns: dict[str, str]
    elapsed_s: float = 0.0  # outside the checksum: may be missing
    form: Literal["index", "mds"] = "mds"  # mixes written before index mixes are MDS
    index: IndexFiles | None = None
    blend_rule: Literal["midmix", "megatron"] = "midmix"
    index_xxh3_128: str | None = None
    fingerprint: str | None = None
    checksum: str | None = None

    @property
    def is_index(self) -> bool:
        return self.form == "index"

    @property
    def mode(self) -> Literal["pretrain"]:
        return "pretrain"

    def to_dict(self) -> dict[str, Any]:
        d = _without_absent(dataclasses.asdict(self))
        for info in d["source_info"]:
            if info.get("fingerprint") is None:
                info.pop("fingerprint", None)
        return d


Manifest = PreparedManifest | MixManifest


def _without_absent(d: dict[str, Any]) -> dict[str, Any]:
    """The core leaves these keys out when it has none (outputs written before they existed)."""
    for key in ("index_xxh3_128", "fingerprint", "checksum"):
        if d.get(key) is None:
            d.pop(key, None)
    return d


def parse_manifest(data: Any, where: str) -> Manifest:
    """A manifest from its JSON value; `where` names it in errors."""
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: not a midmix manifest (expected a JSON object)")
    kind = data.get("kind")
    if kind == "mix":
        return _build(MixManifest, data, where)
    if kind == "prepared":
        return _build(PreparedManifest, data, where)
    raise DatasetError(f"{where}: unknown manifest kind {kind!r} (expected 'prepared' or 'mix')")


def manifest_from_json(text: str, where: str) -> Manifest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: not valid JSON ({e})") from e
    return parse_manifest(data, where)


def read_manifest(directory: Path | str) -> Manifest | None:
    """The dataset's manifest, or None when it has no `midmix.json` (an MDS dataset from elsewhere),
    read through the core's validated open: a DatasetError names what does not match its records."""
    text, _ = _core.open_dataset(Path(directory))
    return None if text is None else manifest_from_json(text, str(Path(directory) / MANIFEST_FILE))


# -- JSON → dataclasses ------------------------------------------------------------------------------


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Dataclass `cls` from the manifest's JSON; fields a newer core adds are ignored."""
    try:
        return to_dataclass(cls, data, MACHINE_WRITTEN)
    except ConfigError as e:
        raise DatasetError(f"{where}: {e}") from e
