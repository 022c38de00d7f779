"""One typed options object per operation (prepare, merge, build-mix, export, raw unigram counts).

These are what `midmix.api` hands the Rust core: `as_core` makes plain data of one (paths as strings,
nested dataclasses as dicts) and the binding builds the core's struct from it by field name, refusing a
missing or unknown field (`rust/py/src/options.rs`), so a field is written here and in the core struct,
nowhere else. Choices (`encoder`, `on_exhaust`, …) are checked by the core's parsers.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from midmix.errors import ConfigError
from midmix.mixspec import Phase

EncoderName = Literal["auto", "fast", "hf"]
ModeName = Literal["pretrain", "sft"]
OnBadRecord = Literal["error", "skip"]
OnExhaust = Literal["error", "repeat", "stop"]
BlendRule = Literal["midmix", "megatron"]

DEFAULT_SIZE_LIMIT = 1 << 26  # 64 MiB, MDSWriter's default

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "ExportOptions",
    "MergeOptions",
    "MixOptions",
    "OutputOptions",
    "PrepareOptions",
    "UnigramFilesOptions",
    "as_core",
    "with_keywords",
]


@dataclass(frozen=True)
class OutputOptions:
    """Where and how a command writes its output (every command that writes one)."""

    out: Path
    overwrite: bool = False  # replace an existing output of the same kind (only that)
    size_limit: int | None = DEFAULT_SIZE_LIMIT  # bytes per shard; merge keeps its parts'
    threads: int | None = None  # None: all cores
    progress: bool = False


@dataclass(frozen=True)
class PrepareOptions:
    name: str
    inputs: list[str]
    tokenizer: Path
    output: OutputOptions
    seq_len: int = 2048
    input_labels: list[str] | None = None
    encoder: EncoderName = "auto"
    mode: ModeName = "pretrain"
    text_field: str = "text"
    text_per_line: bool = False
    prompt_field: str = "prompt"
    response_field: str = "response"
    mask_prompt: bool = True
    eos: str | None = None
    bos: str | None = None
    compression: str | None = None
    hashes: list[str] = field(default_factory=list)
    on_bad_record: OnBadRecord = "error"
    num_tasks: int | None = None
    task_index: int | None = None


@dataclass(frozen=True)
class MergeOptions:
    parts: list[Path]
    output: OutputOptions


@dataclass(frozen=True)
class MixOptions:
    sources: list[tuple[str, Path]]
    phases: list[Phase]
    output: OutputOptions
    seed: int = 0
    global_batch: int | None = None
    global_batch_tokens: int | None = None
    exact_per_batch: bool = False
    on_exhaust: OnExhaust = "error"
    max_repeat: int | None = None
    blend_rule: BlendRule = "midmix"
    materialize: bool = False


@dataclass(frozen=True)
class ExportOptions:
    mix: Path
    output: OutputOptions


@dataclass(frozen=True)
class UnigramFilesOptions:
    inputs: list[str]
    tokenizer: Path
    fields: list[str]
    text_per_line: bool = False
    max_docs: int | None = None
    max_tokens_per_doc: int | None = None
    seed: int = 0
    encoder: EncoderName = "auto"
    threads: int | None = None


T = TypeVar("T")

_OUTPUT_FIELDS = frozenset(f.name for f in dataclasses.fields(OutputOptions))


def with_keywords(cls: Callable[..., T], out: Path, **keywords: Any) -> T:
    """`cls` from keyword arguments (the API's sugar): those naming an `OutputOptions` field go into its
    `output` (written to `out`), the rest are `cls`'s own. An unknown one is a ConfigError naming it."""
    known = {f.name for f in dataclasses.fields(cls)} | _OUTPUT_FIELDS  # type: ignore[arg-type]
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise ConfigError(f"unknown option {', '.join(unknown)} (options: {', '.join(sorted(known - {'output'}))})")
    output = {k: keywords.pop(k) for k in list(keywords) if k in _OUTPUT_FIELDS}
    return cls(output=OutputOptions(out=out, **output), **keywords)


def only_the_object(what: str, given: dict[str, Any]) -> None:
    """Refuse an options object given together with other arguments (which it would silently override)."""
    extra = sorted(k for k, v in given.items() if v not in (None, (), {}, False))
    if extra:
        raise ConfigError(f"give {what} or its fields as arguments, not both (also given: {', '.join(extra)})")


def check_types(options: Any, where: str = "") -> None:
    """Each field of the options dataclass `options` (and of those it holds) against its declared type: a
    ConfigError names the field, so `overwrite="no"` or a string where a list of inputs belongs is refused
    rather than taken for what it happens to mean. Choices (`Literal`) are left to the core's parsers."""
    where = where or type(options).__name__
    hints = typing.get_type_hints(type(options))
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if not _matches(value, hints[f.name]):
            raise ConfigError(f"{where}.{f.name}: expected {_describe(hints[f.name])}, got {value!r}")
        if dataclasses.is_dataclass(value):
            check_types(value, f"{where}.{f.name}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                if dataclasses.is_dataclass(item):
                    check_types(item, f"{where}.{f.name}[]")


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return isinstance(value, str)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        return isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, (str, os.PathLike))
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(_matches, value, args))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    text = tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)
    return text.replace("typing.", "").replace("pathlib.", "").replace("midmix.mixspec.", "")


def as_core(options: Any) -> Any:
    """`options` (an options dataclass, its types checked) as plain data for the core: dataclasses as dicts
    (field by field), paths as strings, tuples as lists."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        check_types(options)
    return _plain(options)


def _plain(options: Any) -> Any:
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options)}
    if isinstance(options, os.PathLike):
        return os.fspath(options)
    if isinstance(options, (list, tuple)):
        return [_plain(v) for v in options]
    if isinstance(options, dict):
        return {k: _plain(v) for k, v in options.items()}
    return options
