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
