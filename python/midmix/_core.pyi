"""Type stubs for the native module `midmix._core` (Rust, PyO3)."""

from pathlib import Path
from typing import Any

import numpy as np

__version__: str

class MidmixError(Exception): ...

class InputError(MidmixError):
    path: str
    line: int | None
    row: int | None

class TokenizerError(MidmixError): ...
class ConfigError(MidmixError): ...
class DatasetError(MidmixError): ...

def prepare(
    name: str,
    inputs: list[str],
    tokenizer: str | Path,
    seq_len: int,
    out: str | Path,
    *,
    input_labels: list[str] | None = None,
    encoder: str = "auto",
    overwrite: bool = False,
    mode: str = "pretrain",
    text_field: str = "text",
    text_per_line: bool = False,
    prompt_field: str = "prompt",
    response_field: str = "response",
    mask_prompt: bool = True,
    eos: str | None = None,
    bos: str | None = None,
    compression: str | None = None,
    hashes: list[str] = ...,
    size_limit: int | None = ...,
    on_bad_record: str = "error",
    num_tasks: int | None = None,
    task_index: int | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> str:
    """Prepare a dataset; returns its `midmix.json` report as a JSON string."""

def merge(parts: list[str | Path], out: str | Path, *, overwrite: bool = False, progress: bool = False) -> str:
    """Merge the parts of a `--num-tasks` prepare; returns the merged report as JSON."""

def read_sample(dir: str | Path, index: int) -> dict[str, Any]:
    """Sample `index` of an MDS directory; ndarray columns come back as numpy arrays."""

class Tokenizer:
    def __init__(self, path: str | Path, encoder: str = "auto") -> None: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: list[str], threads: int | None = None) -> list[list[int]]: ...
    def encode_batch_flat(self, texts: list[str], threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(all ids as uint32, uint64 offsets of each text's ids: len(texts) + 1 of them)."""
    def decode(self, ids: list[int] | np.ndarray, skip_special_tokens: bool = False) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def eos_id(self) -> int | None: ...

def build_mix(
    sources: list[tuple[str, str]],
    phases: list[tuple[str, int, list[tuple[str, float]], bool]],
    out: str | Path,
    *,
    seed: int = 0,
    global_batch: int | None = None,
    exact_per_batch: bool = False,
    on_exhaust: str = "error",
    max_repeat: int | None = None,
    overwrite: bool = False,
    size_limit: int | None = ...,
    threads: int | None = None,
    progress: bool = False,
) -> str:
    """Build a mix; phases are ("tokens" | "samples" | "fill", length, [(source, weight)], ramp).
    Returns the mix's `midmix.json` report as a JSON string."""

class MixReader:
    """Memory-mapped random access to a mix's (or prepared dataset's) fixed-size samples."""

    def __init__(self, dir: str | Path) -> None: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def seq_len(self) -> int: ...
    def gather(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """(tokens [n, seq_len] in the stored dtype, source [n] or None)."""
    def read_strided(self, start: int, stride: int, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Samples start + stride*j (j < count) as (int64 tokens [count, seq_len], source or None)."""

def unigram_raw(
    inputs: list[str],
    tokenizer: str | Path,
    *,
    fields: list[str] = ...,
    text_per_line: bool = False,
    max_docs: int | None = None,
    max_tokens_per_doc: int | None = None,
    seed: int = 0,
    encoder: str = "auto",
    threads: int | None = None,
) -> tuple[np.ndarray, int, int, int]:
    """Token-id counts over raw inputs: (uint64 counts, documents, tokens, skipped records)."""

def unigram_dataset(
    dir: str | Path, *, exclude: list[int] = ..., threads: int | None = None
) -> tuple[np.ndarray, int, int, int]:
    """Token-id counts of a prepared or mixed dataset: (uint64 counts, samples, tokens, 0)."""
