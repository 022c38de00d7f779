"""midmix's operations as Python functions: prepare, merge, build and export a mix, verify, count unigrams.

Each call hands one typed options object to the Rust core (`midmix._core`, private), which
validates it once and runs with the GIL released; Ctrl-C stops it and leaves no output. Results
come back as typed manifests (`midmix.manifest`). The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import numpy as np

from midmix import _core, registry
from midmix.errors import ConfigError
from midmix.manifest import MixManifest, PreparedManifest, manifest_from_json, read_manifest
from midmix.mixspec import Phase, source_order
from midmix.registry import PathLike
from midmix.tokenizer import resolve_tokenizer

EncoderName = Literal["auto", "fast", "hf"]
ModeName = Literal["pretrain", "sft"]
OnBadRecord = Literal["error", "skip"]
OnExhaust = Literal["error", "repeat", "stop"]
BlendRule = Literal["midmix", "megatron"]

DEFAULT_SIZE_LIMIT = 1 << 26  # 64 MiB, MDSWriter's default
__version__: str = _core.__version__

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "UnigramCounts",
    "__version__",
    "build_mix",
    "count_unigrams_dataset",
    "count_unigrams_files",
    "export",
    "merge",
    "planned_counts",
    "prepare",
    "verify",
]


# The options objects below are what crosses into Rust: the binding reads their attributes by name
# (`rust/py/src/options.rs`), so field names are part of that contract.


@dataclass(frozen=True)
class PrepareOptions:
    name: str
    inputs: list[str]
    tokenizer: Path
    seq_len: int
    out: Path
    input_labels: list[str] | None = None
    encoder: EncoderName = "auto"
    overwrite: bool = False
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
    size_limit: int | None = DEFAULT_SIZE_LIMIT
    on_bad_record: OnBadRecord = "error"
    num_tasks: int | None = None
    task_index: int | None = None
    threads: int | None = None
    progress: bool = False


@dataclass(frozen=True)
class MergeOptions:
    parts: list[Path]
    out: Path
    overwrite: bool = False
    progress: bool = False


@dataclass(frozen=True)
class MixOptions:
    sources: list[tuple[str, Path]]
    phases: list[Phase]
    out: Path
    seed: int = 0
    global_batch: int | None = None
    exact_per_batch: bool = False
    on_exhaust: OnExhaust = "error"
    max_repeat: int | None = None
    blend_rule: BlendRule = "midmix"
    materialize: bool = False
    overwrite: bool = False
    size_limit: int | None = DEFAULT_SIZE_LIMIT
    threads: int | None = None
    progress: bool = False


@dataclass(frozen=True)
class ExportOptions:
    mix: Path
    out: Path
    overwrite: bool = False
    size_limit: int | None = DEFAULT_SIZE_LIMIT
    threads: int | None = None
    progress: bool = False


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


def _set_encoder_threads(threads: int | None) -> None:
    # The fast encoder sizes its worker pool from this variable, once per process.
    if threads:
        os.environ.setdefault("FASTOKENS_BPE_THREADS", str(threads))


def prepare(
    name: str,
    inputs: Sequence[PathLike] = (),
    *,
    tokenizer: PathLike,
    seq_len: int = 2048,
    out: PathLike | None = None,
    data_root: PathLike | None = None,
    hf: str | None = None,
    hf_config: str | None = None,
    split: str = "train",
    encoder: EncoderName = "auto",
    overwrite: bool = False,
    mode: ModeName = "pretrain",
    text_field: str = "text",
    text_per_line: bool = False,
    prompt_field: str = "prompt",
    response_field: str = "response",
    mask_prompt: bool = True,
    eos: str | None = None,
    bos: str | None = None,
    compression: str | None = None,
    hashes: Sequence[str] = (),
    size_limit: int | None = DEFAULT_SIZE_LIMIT,
    on_bad_record: OnBadRecord = "error",
    num_tasks: int | None = None,
    task_index: int | None = None,
    threads: int | None = None,
    progress: bool = False,
    register: bool = True,
) -> PreparedManifest:
    """Tokenize and pack `inputs` (files, directories, globs) or the `datasets` dataset `hf` into an
    MDS dataset at `out` (default: DATA_ROOT/NAME), registered as `name` unless it is a task part."""
    if bool(inputs) == bool(hf):
        raise ConfigError("give input files/directories/globs, or an HF dataset, not both or neither")
    root = registry.data_root(data_root)
    out_path = Path(out) if out is not None else root / name
    opts = PrepareOptions(
        # Recorded absolute: `inspect --show` reads it back from wherever it is run.
        name=name,
        inputs=[str(i) for i in inputs],
        tokenizer=resolve_tokenizer(tokenizer).absolute(),
        seq_len=seq_len,
        out=out_path,
        encoder=encoder,
        overwrite=overwrite,
        mode=mode,
        text_field=text_field,
        text_per_line=text_per_line,
        prompt_field=prompt_field,
        response_field=response_field,
        mask_prompt=mask_prompt,
        eos=eos,
        bos=bos,
        compression=compression,
        hashes=list(hashes),
        size_limit=size_limit,
        on_bad_record=on_bad_record,
        num_tasks=num_tasks,
        task_index=task_index,
        threads=threads,
        progress=progress,
    )
    _set_encoder_threads(threads)
    if register and num_tasks is None:
        registry.check_name(name, out_path, root)  # before any work: a name never re-points
    if hf:
        from midmix.hf import export_to_parquet

        fields = [f for f in (prompt_field, response_field) if f] if mode == "sft" else [text_field]
        with export_to_parquet(hf, hf_config, split, fields) as (path, label):
            text = _core.prepare(replace(opts, inputs=[str(path)], input_labels=[label]))
    else:
        text = _core.prepare(opts)
    manifest = _manifest(text, out_path, PreparedManifest)
    if register and num_tasks is None:
        registry.register(name, out_path, root)
    return manifest


def merge(
    parts: Sequence[PathLike],
    out: PathLike,
    *,
    data_root: PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    name: str | None = None,
    register: bool = True,
) -> PreparedManifest:
    """Combine the parts of a `prepare(num_tasks=…)` run into the dataset one run gives, registered as
    `name` (default: the NAME the parts were prepared under)."""
    opts = MergeOptions(parts=[Path(p) for p in parts], out=Path(out), overwrite=overwrite, progress=progress)
    root = registry.data_root(data_root)
    first = read_manifest(opts.parts[0]) if register and opts.parts else None
    if register and name is None and first is not None and first.kind == "prepared":
        name = first.name
    if register and name is not None:
        registry.check_name(name, opts.out, root)
    manifest = _manifest(_core.merge(opts), opts.out, PreparedManifest)
    if register and name is not None:
        registry.register(name, opts.out, root)
    return manifest


def build_mix(
    phases: Sequence[Phase],
    out: PathLike,
    *,
    sources: Mapping[str, PathLike] | None = None,
    data_root: PathLike | None = None,
    seed: int = 0,
    global_batch: int | None = None,
    exact_per_batch: bool = False,
    on_exhaust: OnExhaust = "error",
    max_repeat: int | None = None,
    blend_rule: BlendRule = "midmix",
    materialize: bool = False,
    overwrite: bool = False,
    size_limit: int | None = DEFAULT_SIZE_LIMIT,
    threads: int | None = None,
    progress: bool = False,
    name: str | None = None,
    register: bool = True,
) -> MixManifest:
    """Interleave prepared sources by the phases' weights into one stream in training order.

    The mix is an index over the untouched sources (5 bytes per sample) unless `materialize`, which
    writes MDS shards holding the tokens (what `streaming.StreamingDataset` reads; `export` makes the
    same from an index mix). Sources are the names the phases use, found in `sources` (name → path)
    or under the data root. The mix is registered under the data root as `name` (default: the output
    directory's name) unless `register` is false."""
    root = registry.data_root(data_root)
    given = dict(sources or {})
    resolved = [(n, Path(given[n]) if n in given else registry.resolve(n, root)) for n in source_order(phases)]
    opts = MixOptions(
        sources=resolved,
        phases=list(phases),
        out=Path(out),
        seed=seed,
        global_batch=global_batch,
        exact_per_batch=exact_per_batch,
        on_exhaust=on_exhaust,
        max_repeat=max_repeat,
        blend_rule=blend_rule,
        materialize=materialize,
        overwrite=overwrite,
        size_limit=size_limit,
        threads=threads,
        progress=progress,
    )
    if register:
        registry.check_name(name or opts.out.resolve().name, opts.out, root)
    manifest = _manifest(_core.build_mix(opts), opts.out, MixManifest)
    if register:
        registry.register(name or opts.out.resolve().name, opts.out, root)
    return manifest


def export(
    mix: PathLike,
    out: PathLike,
    *,
    data_root: PathLike | None = None,
    overwrite: bool = False,
    size_limit: int | None = DEFAULT_SIZE_LIMIT,
    threads: int | None = None,
    progress: bool = False,
    name: str | None = None,
    register: bool = False,
) -> MixManifest:
    """Write an index mix (a path or registered name) as MDS shards: the bytes `build_mix(...,
    materialize=True)` writes for the same inputs. Registered as `name` when `register`."""
    root = registry.data_root(data_root)
    opts = ExportOptions(
        mix=registry.resolve(mix, root),
        out=Path(out),
        overwrite=overwrite,
        size_limit=size_limit,
        threads=threads,
        progress=progress,
    )
    if register:
        registry.check_name(name or opts.out.resolve().name, opts.out, root)
    manifest = _manifest(_core.export(opts), opts.out, MixManifest)
    if register:
        registry.register(name or opts.out.resolve().name, opts.out, root)
    return manifest


def planned_counts(manifest: MixManifest, n: int) -> np.ndarray:
    """The plan's cumulative target T_i(n) per source among a mix's first `n` samples (past its end: a
    later pass at the final weights), computed by the core's planner from the manifest's phases."""
    return np.array(_core.planned_counts(json.dumps(manifest.to_dict()), n))


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` checked, all of it found consistent."""

    kind: str
    samples: int
    shards: int
    hashes_checked: int  # recorded shard hashes recomputed and equal
    tokens_checked: int  # token ids found below the vocabulary size (SFT ids are not scanned)
    vocab_size: int


def verify(spec: PathLike, *, data_root: PathLike | None = None) -> VerifyReport:
    """Check a dataset (a path or a registered name) against its own records: sample counts in
    index.json vs midmix.json, shard sizes on disk, every recorded shard hash, and that every token id
    is below the vocabulary size; an index mix checks each source so, its index files' hashes, and
    that every position names a sample that exists. Raises DatasetError naming the first thing that
    does not match."""
    path = registry.resolve(spec, data_root)
    return VerifyReport(**json.loads(_core.verify(path)))


class UnigramCounts(NamedTuple):
    counts: np.ndarray  # uint64, indexed by token id
    documents: int
    tokens: int
    skipped: int


def count_unigrams_files(
    inputs: Sequence[PathLike],
    tokenizer: PathLike,
    *,
    fields: Sequence[str] = ("text",),
    text_per_line: bool = False,
    max_docs: int | None = None,
    max_tokens_per_doc: int | None = None,
    seed: int = 0,
    encoder: EncoderName = "auto",
    threads: int | None = None,
) -> UnigramCounts:
    """Token-id counts over raw files, tokenized as `prepare` does (no special tokens added)."""
    opts = UnigramFilesOptions(
        inputs=[str(i) for i in inputs],
        tokenizer=resolve_tokenizer(tokenizer),
        fields=list(fields),
        text_per_line=text_per_line,
        max_docs=max_docs,
        max_tokens_per_doc=max_tokens_per_doc,
        seed=seed,
        encoder=encoder,
        threads=threads,
    )
    _set_encoder_threads(threads)
    return UnigramCounts(*_core.unigram_raw(opts))


def count_unigrams_dataset(path: PathLike, *, exclude: Sequence[int] = (), threads: int | None = None) -> UnigramCounts:
    """Token-id counts of a prepared or mixed dataset (no re-tokenizing); `exclude` ids are not counted."""
    return UnigramCounts(*_core.unigram_dataset(Path(path), list(exclude), threads))


M = TypeVar("M", PreparedManifest, MixManifest)


def _manifest(text: str, out: Path, kind: type[M]) -> M:
    """The manifest the core returned for `out`, checked to be of the kind the call makes."""
    manifest = manifest_from_json(text, f"{out}/midmix.json")
    if not isinstance(manifest, kind):
        raise ConfigError(f"{out}: the core returned a {manifest.kind} manifest, expected {kind.__name__}")
    return manifest
