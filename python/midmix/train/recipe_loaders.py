"""Loaders for training and evaluation: a mix in its exact order, SFT examples, held-out eval sets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.utils import dist
from torch.utils.data import DataLoader

from midmix.errors import ConfigError, MidmixError
from midmix.loaders import MixDataset, MixLoader, SftDataset, pad_examples
from midmix.manifest import Manifest
from midmix.registry import Dataset
from midmix.train.config import DataSetConfig, EvalSetConfig, parse_select


@dataclass
class DatasetInfo:
    """A recipe's dataset, opened: where it is and what its manifest says."""

    dataset: Dataset
    manifest: Manifest

    @property
    def path(self) -> Path:
        return self.dataset.path

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def mode(self) -> str:
        return self.manifest.mode

    @property
    def seq_len(self) -> int:
        return self.manifest.seq_len

    @property
    def vocab_size(self) -> int:
        return self.manifest.tokenizer.vocab_size


def dataset_info(path: str, key: str) -> DatasetInfo:
    """The dataset a recipe key names (a directory or a registered name); errors name the key."""
    try:
        d = Dataset.open(path)
        return DatasetInfo(d, d.require_manifest(key))
    except MidmixError as e:
        raise type(e)(f"{key}.path: {e}") from e


def check_kind(info: DatasetInfo, kind: str, key: str) -> None:
    if (info.mode == "sft") != (kind == "sft"):
        raise ConfigError(f"{key}: {info.path} was prepared in {info.mode} mode but {key}.kind is {kind!r}")


def sft_dataset(info: DatasetInfo, select: str | None, key: str, mask_prompt: bool) -> SftDataset:
    ds = SftDataset(info.path, mask_prompt=mask_prompt)
    if select:
        ds.rows = parse_select(select, len(ds), f"{key}.select")
    if len(ds) == 0:
        raise ConfigError(f"{key}: selects no examples out of {len(ds.reader)}")
    return ds


# --- training loaders ----------------------------------------------------------------------------------


def _tokens_batch(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """StreamingDataset samples of a mix → the midmix loader's batch layout."""
    out = {"input_ids": torch.from_numpy(np.stack([s["tokens"] for s in samples]).astype(np.int64))}
    if "source" in samples[0]:
        out["source"] = torch.tensor([int(s["source"]) for s in samples], dtype=torch.uint8)
    return out


def worker_options(cfg: DataSetConfig, on_gpu: bool) -> dict[str, Any]:
    """The DataLoader's process and memory options: pin_memory defaults to on GPU, persistent_workers
    to on whenever there are workers (a new epoch then keeps its workers and their mapped shards)."""
    if cfg.num_workers > 0:
        check_worker_tmpdir()
    persistent = cfg.num_workers > 0 if cfg.persistent_workers is None else cfg.persistent_workers
    return {
        "num_workers": cfg.num_workers,
        "pin_memory": on_gpu if cfg.pin_memory is None else cfg.pin_memory,
        "persistent_workers": persistent,
    }


def check_worker_tmpdir() -> None:
    """DataLoader workers hand batches over through a socket under $TMPDIR (`pymp-…/listener-…`, 33 more
    characters), and a socket path longer than 107 bytes fails inside the worker's queue thread, where
    torch drops it: the training loop then waits forever. Refuse such a TMPDIR up front instead."""
    import tempfile

    tmp = tempfile.gettempdir()
    if len(os.fsencode(tmp)) + 33 > 107:
        raise ConfigError(
            f"data.train.num_workers > 0 needs a shorter TMPDIR: {tmp} is {len(tmp)} characters, and the "
            "sockets DataLoader workers pass batches through must fit in 107 (set TMPDIR to e.g. /tmp)"
        )


def train_loader(
    cfg: DataSetConfig, info: DatasetInfo, global_batch: int, seed: int, on_gpu: bool = False
) -> DataLoader:
    world, rank = dist.get_world_size(), dist.get_global_rank()
    if global_batch % world:
        raise ConfigError(f"data.global_batch_size {global_batch} is not a multiple of the world size {world}")
    per_device = global_batch // world
    options = worker_options(cfg, on_gpu)
    if cfg.kind == "sft":
        ds = sft_dataset(info, cfg.select, "data.train", cfg.mask_prompt)
        sampler = dist.get_sampler(ds, shuffle=cfg.shuffle, drop_last=True, seed=seed)
        return DataLoader(
            ds, batch_size=per_device, sampler=sampler, collate_fn=pad_examples, drop_last=True, **options
        )
    if cfg.select is not None:
        raise ConfigError("data.train.select: a pretraining mix is read whole, in its order; select applies to sft")
    if cfg.loader == "midmix":
        mix = MixDataset(info.path, global_batch, rank=rank, world_size=world)
        return MixLoader(mix, **options)
    if info.dataset.index_mix is not None:
        raise ConfigError(
            f"data.train.loader: streaming reads MDS shards, and {info.path} is an index mix over its "
            f"sources: use loader: midmix, or `midmix export {info.path} --out DIR` (or build it with "
            "`build-mix --materialize`) and train on DIR"
        )
    # The settings under which StreamingDataset yields a mix in the order build-mix wrote it (README).
    from streaming import StreamingDataset

    stream = StreamingDataset(
        local=str(info.path), shuffle=False, num_canonical_nodes=1, batch_size=per_device, replication=None
    )
    return DataLoader(stream, batch_size=per_device, collate_fn=_tokens_batch, drop_last=True, **options)


# --- evaluation sets ---------------------------------------------------------------------------------


class EvalSet:
    """A fixed held-out set, split over ranks, iterated in batches of `batch_size`."""

    def __init__(self, name: str, cfg: EvalSetConfig, batch_size: int) -> None:
        key = f"data.eval.{name}"
        info = dataset_info(cfg.path, key)
        check_kind(info, cfg.kind, key)
        self.name, self.batch_size, self.kind = name, batch_size, cfg.kind
        if cfg.kind == "sft":
            sft = sft_dataset(info, cfg.select, key, cfg.mask_prompt)
            examples = [sft[i] for i in range(len(sft))]
        else:
            reader = info.dataset.tokens()
            rows = (
                parse_select(cfg.select, reader.num_samples, f"{key}.select")
                if cfg.select
                else range(reader.num_samples)
            )
            tokens, _ = reader.gather(list(rows))
            examples = [(t.astype(np.int64), t.astype(np.int64)) for t in tokens]
        if cfg.max_samples is not None:
            examples = examples[: cfg.max_samples]
        if not examples:
            raise ConfigError(f"{key}: no samples")
        world, rank = dist.get_world_size(), dist.get_global_rank()
        # Every rank runs the same number of batches: sharded models need all ranks in each forward.
        self.total = len(examples) // world * world
        if self.total == 0:
            raise ConfigError(f"{key}: {len(examples)} samples cannot be split over {world} ranks")
        self.examples = examples[rank : self.total : world]

    def batches(self, limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        count = 0
        for start in range(0, len(self.examples), self.batch_size):
            if limit is not None and count >= limit:
                return
            count += 1
            yield pad_examples(self.examples[start : start + self.batch_size])
