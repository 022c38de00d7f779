"""Type stubs for the native module `midmix._core` (Rust, PyO3). Private: use `midmix`'s API. It raises
the classes of `midmix.errors`.

An operation's options are `midmix.options.as_core(...)` of its options dataclass: the binding builds
the core's struct from them by field name."""

from pathlib import Path
from typing import Any, Literal, final

import numpy as np

__all__ = [
    "__version__",
    "open_dataset",
    "verify",
    "manifest_schema",
    "is_dataset",
    "check_weights",
    "prepare",
    "merge",
    "build_mix",
    "export",
    "planned_counts",
    "unigram_raw",
    "unigram_dataset",
    "TokenReader",
    "SampleReader",
    "Tokenizer",
]

__version__: str

def open_dataset(dir: str | Path) -> tuple[str | None, str | None]:
    """The one validated open: returns (`midmix.json`, `index.json`) as JSON text, each None where absent."""

def manifest_schema() -> str:
    """The JSON schema of `midmix.json` per kind (`prepared`, `mix`), as a JSON string."""

def check_weights(weights: list[tuple[str, float]], at: str) -> None:
    """The one check of a phase's weights: each source once, finite, non-negative, not all zero."""

def is_dataset(dir: str | Path) -> bool:
    """Whether `dir` looks like a dataset to open: `index.json`, or `midmix.json` (an index mix)."""

def prepare(options: dict[str, Any]) -> str:
    """Prepare a dataset; returns its `midmix.json` manifest as a JSON string."""

def merge(options: dict[str, Any]) -> str:
    """Merge the parts of a `--num-tasks` prepare; returns the merged manifest as JSON."""

def build_mix(options: dict[str, Any]) -> str:
    """Build a mix; returns its `midmix.json` manifest as a JSON string."""

def export(options: dict[str, Any]) -> str:
    """Write an index mix as MDS shards; returns the exported manifest as a JSON string."""

def planned_counts(manifest: str, n: int) -> list[float]:
    """The plan's cumulative target per source among a mix's first `n` positions."""

def unigram_raw(options: dict[str, Any]) -> tuple[np.ndarray, int, int, int]:
    """Token-id counts over raw inputs: (uint64 counts, documents, tokens, skipped records)."""

def unigram_dataset(dir: str | Path, exclude: list[int], threads: int | None) -> tuple[np.ndarray, int, int, int]:
    """Token-id counts of a prepared or mixed dataset: (uint64 counts, samples, tokens, 0)."""

def verify(dir: str | Path) -> str:
    """Check a dataset against its own records; returns what was checked as a JSON string."""

@final
class Tokenizer:
    """A tokenizer.json with midmix's encoder. Loaded once per process for the same file contents.

    `threads` in these methods (and in `prepare`, `unigram_*`) sizes midmix's own worker pool: record
    parsing, packing, hashing and the HF fallback encoder. The fast encoder (fastokens) has its own
    pool, sized once per process, at its first encode, from `FASTOKENS_BPE_THREADS` (default: all
    cores, at most 32): `midmix prepare --threads N` and `midmix.prepare(threads=N)` set that variable
    when it is unset and no encode has run yet; after that, only the process's first value holds."""

    def __new__(cls, path: str | Path, encoder: Literal["auto", "fast", "hf"] = ...) -> Tokenizer:
        """`encoder` defaults to "auto": a Rust value, which the module's signature shows as `...`, as here."""
    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: list[str], threads: int | None = None) -> list[list[int]]:
        """Ids per text as Python lists: creating the int objects costs more than encoding; use
        `encode_batch_flat` where arrays will do."""
    def encode_batch_flat(self, texts: list[str], threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(all ids as uint32, uint64 offsets of each text's ids: len(texts) + 1 of them)."""
    def decode(self, ids: list[int] | np.ndarray, skip_special_tokens: bool = False) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def backend(self) -> Literal["fastokens", "hf-tokenizers"]: ...
    @property
    def eos_id(self) -> int | None: ...

@final
class TokenReader:
    """Memory-mapped random access to a mix's (or prepared dataset's) fixed-size samples."""

    def __new__(cls, dir: str | Path) -> TokenReader: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def seq_len(self) -> int: ...
    def __len__(self) -> int: ...
    def gather(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """(tokens [n, seq_len] in the stored dtype, source [n] or None)."""
    def read_strided(self, start: int, stride: int, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Samples start + stride*j (j < count) as (int64 tokens [count, seq_len], source or None)."""

@final
class SampleReader:
    """Whole samples of any MDS dataset as {column: value}, shards kept mapped between reads."""

    def __new__(cls, dir: str | Path) -> SampleReader: ...
    @property
    def columns(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> dict[str, Any]: ...
