"""midmix's operations as Python functions: prepare, merge, build and export a mix, verify, count unigrams.

Each call hands one typed options object to the Rust core (`midmix._core`, private), which
validates it once and runs with the GIL released; Ctrl-C stops it and leaves no output. Results
come back as typed manifests (`midmix.manifest`). The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from midmix import _core, registry
from midmix.errors import ConfigError
from midmix.manifest import MixManifest, PreparedManifest, manifest_from_json, read_manifest
from midmix.mixspec import Phase, source_order
from midmix.options import (
    DEFAULT_SIZE_LIMIT,
    EncoderName,
    ExportOptions,
    MergeOptions,
    MixOptions,
    OutputOptions,
    PrepareOptions,
    UnigramFilesOptions,
    as_core,
    only_the_object,
    with_keywords,
)
from midmix.registry import PathLike
from midmix.tokenizer import resolve_tokenizer

__version__: str = _core.__version__

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "ExportOptions",
    "MergeOptions",
    "MixOptions",
    "OutputOptions",
    "PrepareOptions",
    "UnigramCounts",
    "UnigramFilesOptions",
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


def _a_list(what: str, value: object) -> None:
    # A string is a sequence too: taken as one, "/data/a.jsonl" would be the inputs "/", "d", "a", …
    if isinstance(value, (str, bytes, os.PathLike)):
        raise ConfigError(f"{what}: give a list of paths, not one path ({value!r})")


def _set_encoder_threads(threads: int | None) -> None:
    # The fast encoder sizes its worker pool from this variable, once per process.
    if threads:
        os.environ.setdefault("FASTOKENS_BPE_THREADS", str(threads))


def prepare(
    name: str | PrepareOptions,
    inputs: Sequence[PathLike] = (),
    *,
    tokenizer: PathLike | None = None,
    out: PathLike | None = None,
    data_root: PathLike | None = None,
    hf: str | None = None,
    hf_config: str | None = None,
    split: str = "train",
    register: bool = True,
    **options: Any,
) -> PreparedManifest:
    """Tokenize and pack `inputs` (files, directories, globs) or the `datasets` dataset `hf` into an
    MDS dataset at `out` (default: DATA_ROOT/NAME), registered as `name` unless it is a task part.

    Takes a `PrepareOptions`, or its fields (and `OutputOptions`' but `out`) as keywords."""
    root = registry.data_root(data_root)
    if isinstance(name, PrepareOptions):
        only_the_object("a PrepareOptions", {"inputs": inputs, "tokenizer": tokenizer, "out": out, **options})
        opts = name
    else:
        if tokenizer is None:
            raise ConfigError("prepare needs a tokenizer")
        _a_list("inputs", inputs)
        opts = with_keywords(
            # Recorded absolute: `inspect --show` reads it back from wherever it is run.
            PrepareOptions,
            Path(out) if out is not None else root / name,
            name=name,
            inputs=[str(i) for i in inputs],
            tokenizer=resolve_tokenizer(tokenizer).absolute(),
            **options,
        )
    if bool(opts.inputs) == bool(hf):
        raise ConfigError("give input files/directories/globs, or an HF dataset, not both or neither")
    out_path = opts.output.out
    _set_encoder_threads(opts.output.threads)
    registered = register and opts.num_tasks is None
    if registered:
        registry.check_name(opts.name, out_path, root)  # before any work: a name never re-points
    if hf:
        from midmix.hf import export_to_parquet

        fields = [f for f in (opts.prompt_field, opts.response_field) if f] if opts.mode == "sft" else [opts.text_field]
        with export_to_parquet(hf, hf_config, split, fields) as (path, label):
            text = _core.prepare(as_core(replace(opts, inputs=[str(path)], input_labels=[label])))
    else:
        text = _core.prepare(as_core(opts))
    manifest = _manifest(text, out_path, PreparedManifest)
    if registered:
        registry.register(opts.name, out_path, root)
    return manifest


def merge(
    parts: Sequence[PathLike] | MergeOptions,
    out: PathLike | None = None,
    *,
    data_root: PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    name: str | None = None,
    register: bool = True,
) -> PreparedManifest:
    """Combine the parts of a `prepare(num_tasks=…)` run into the dataset one run gives, registered as
    `name` (default: the NAME the parts were prepared under)."""
    if isinstance(parts, MergeOptions):
        only_the_object("a MergeOptions", {"out": out, "overwrite": overwrite, "progress": progress})
        opts = parts
    else:
        if out is None:
            raise ConfigError("merge needs an output directory")
        _a_list("parts", parts)
        # The shards are cut as the parts' were (their size limit): the result equals one run's.
        opts = MergeOptions(
            parts=[Path(p) for p in parts],
            output=OutputOptions(out=Path(out), overwrite=overwrite, size_limit=None, progress=progress),
        )
    root = registry.data_root(data_root)
    first = read_manifest(opts.parts[0]) if register and opts.parts else None
    if register and name is None and first is not None and first.kind == "prepared":
        name = first.name
    if register and name is not None:
        registry.check_name(name, opts.output.out, root)
    manifest = _manifest(_core.merge(as_core(opts)), opts.output.out, PreparedManifest)
    if register and name is not None:
        registry.register(name, opts.output.out, root)
    return manifest


def build_mix(
    phases: Sequence[Phase] | MixOptions,
    out: PathLike | None = None,
    *,
    sources: Mapping[str, PathLike] | None = None,
    data_root: PathLike | None = None,
    name: str | None = None,
    register: bool = True,
    **options: Any,
) -> MixManifest:
    """Interleave prepared sources by the phases' weights into one stream in training order.

    The mix is an index over the untouched sources (5 bytes per sample) unless `materialize`, which
    writes MDS shards holding the tokens (what `streaming.StreamingDataset` reads; `export` makes the
    same from an index mix). Sources are the names the phases use, found in `sources` (name → path)
    or under the data root. The mix is registered under the data root as `name` (default: the output
    directory's name) unless `register` is false.

    Takes a `MixOptions`, or the phases and its other fields (and `OutputOptions`' but `out`) as keywords."""
    root = registry.data_root(data_root)
    if isinstance(phases, MixOptions):
        only_the_object("a MixOptions", {"out": out, "sources": sources, **options})
        opts = phases
    else:
        if out is None:
            raise ConfigError("build_mix needs an output directory")
        given = dict(sources or {})
        resolved = [
            (n, Path(given[n]) if n in given else registry.resolve(n, root)) for n in source_order(list(phases))
        ]
        opts = with_keywords(MixOptions, Path(out), sources=resolved, phases=list(phases), **options)
    out_path = opts.output.out
    if register:
        registry.check_name(name or out_path.resolve().name, out_path, root)
    manifest = _manifest(_core.build_mix(as_core(opts)), out_path, MixManifest)
    if register:
        registry.register(name or out_path.resolve().name, out_path, root)
    return manifest


def export(
    mix: PathLike | ExportOptions,
    out: PathLike | None = None,
    *,
    data_root: PathLike | None = None,
    name: str | None = None,
    register: bool = False,
    **options: Any,
) -> MixManifest:
    """Write an index mix (a path or registered name) as MDS shards: the bytes `build_mix(...,
    materialize=True)` writes for the same inputs. Registered as `name` when `register`.

    Takes an `ExportOptions`, or `OutputOptions`' fields but `out` as keywords."""
    root = registry.data_root(data_root)
    if isinstance(mix, ExportOptions):
        only_the_object("an ExportOptions", {"out": out, **options})
        opts = mix
    else:
        if out is None:
            raise ConfigError("export needs an output directory")
        opts = with_keywords(ExportOptions, Path(out), mix=registry.resolve(mix, root), **options)
    out_path = opts.output.out
    if register:
        registry.check_name(name or out_path.resolve().name, out_path, root)
    manifest = _manifest(_core.export(as_core(opts)), out_path, MixManifest)
    if register:
        registry.register(name or out_path.resolve().name, out_path, root)
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
    return UnigramCounts(*_core.unigram_raw(as_core(opts)))


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
