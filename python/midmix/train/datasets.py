"""Loaders for training and evaluation: a mix in its exact order, SFT examples, held-out eval sets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.utils import dist
from torch.utils.data import DataLoader, Dataset

from midmix import registry
from midmix._core import ConfigError, MixReader, read_sample
from midmix.data import MixDataset, MixLoader
from midmix.summary import num_samples, read_index
from midmix.train.config import DataSetConfig, EvalSetConfig, parse_select
from midmix.train.models import IGNORE


@dataclass
class DatasetInfo:
    path: Path
    kind: str  # prepared | mix
    mode: str  # pretrain | sft
    seq_len: int
    vocab_size: int
    eos_id: int | None
    report: dict[str, Any]


def resolve(path: str, key: str) -> Path:
    """A dataset directory, or a name registered under the data root."""
    p = Path(path)
    if (p / "index.json").exists():
        return p
    if "/" not in path and p.suffix == "":
        try:
            return registry.lookup(path, registry.data_root())
        except ConfigError as e:
            raise ConfigError(f"{key}.path: {e}") from e
    raise ConfigError(f"{key}.path: no MDS dataset at {path} (index.json missing); run `midmix prepare` or "
                      "`midmix build-mix` first")


def dataset_info(path: str, key: str) -> DatasetInfo:
    directory = resolve(path, key)
    report_path = directory / "midmix.json"
    if not report_path.exists():
        raise ConfigError(f"{key}: {directory} has no midmix.json; only midmix-written datasets can be trained on")
    report = json.loads(report_path.read_text())
    tok = report.get("tokenizer") or {}
    return DatasetInfo(path=directory, kind=report.get("kind", "prepared"), mode=report.get("mode", "pretrain"),
                       seq_len=int(report["seq_len"]), vocab_size=int(tok.get("vocab_size", 0)),
                       eos_id=report.get("eos_id"), report=report)


def check_kind(info: DatasetInfo, kind: str, key: str) -> None:
    if (info.mode == "sft") != (kind == "sft"):
        raise ConfigError(f"{key}: {info.path} was prepared in {info.mode} mode but {key}.kind is {kind!r}")


# --- SFT ---------------------------------------------------------------------------------------------

class SftDataset(Dataset):
    """`prepare --mode sft` examples held in memory: (input_ids, labels) with -100 over masked prompts."""

    def __init__(self, path: Path, select: str | None, key: str, mask_prompt: bool = True) -> None:
        total = num_samples(read_index(path))
        rows = parse_select(select, total, f"{key}.select") if select else range(total)
        if len(rows) == 0:
            raise ConfigError(f"{key}: selects no examples out of {total}")
        self.examples = []
        for i in rows:
            sample = read_sample(path, i)
            ids = np.asarray(sample["input_ids"], dtype=np.int64)
            labels = np.asarray(sample["labels"], dtype=np.int64) if mask_prompt else ids.copy()
            self.examples.append((ids, labels))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.examples[i]


def pad_examples(examples: list[tuple[np.ndarray, np.ndarray]], multiple: int = 8) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest example (rounded up to `multiple`). Padding is never scored, and
    with causal attention it cannot change the logits of the real tokens before it."""
    width = max(len(ids) for ids, _ in examples)
    width = -(-width // multiple) * multiple
    input_ids = np.zeros((len(examples), width), dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, :len(ids)] = ids
        labels[row, :len(lab)] = lab
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}


# --- training loaders ----------------------------------------------------------------------------------

def _tokens_batch(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """StreamingDataset samples of a mix → the midmix loader's batch layout."""
    out = {"input_ids": torch.from_numpy(np.stack([s["tokens"] for s in samples]).astype(np.int64))}
    if "source" in samples[0]:
        out["source"] = torch.tensor([int(s["source"]) for s in samples], dtype=torch.uint8)
    return out


def train_loader(cfg: DataSetConfig, info: DatasetInfo, global_batch: int, seed: int) -> DataLoader:
    world, rank = dist.get_world_size(), dist.get_global_rank()
    if global_batch % world:
        raise ConfigError(f"data.global_batch_size {global_batch} is not a multiple of the world size {world}")
    per_device = global_batch // world
    if cfg.kind == "sft":
        ds = SftDataset(info.path, cfg.select, "data.train", cfg.mask_prompt)
        sampler = dist.get_sampler(ds, shuffle=cfg.shuffle, drop_last=True, seed=seed)
        return DataLoader(ds, batch_size=per_device, sampler=sampler, collate_fn=pad_examples,
                          num_workers=cfg.num_workers, drop_last=True)
    if cfg.select is not None:
        raise ConfigError("data.train.select: a pretraining mix is read whole, in its order; select applies to sft")
    if cfg.loader == "midmix":
        mix = MixDataset(info.path, global_batch, rank=rank, world_size=world)
        return MixLoader(mix, num_workers=cfg.num_workers)
    # The settings under which StreamingDataset yields a mix in the order build-mix wrote it (README).
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(info.path), shuffle=False, num_canonical_nodes=1, batch_size=per_device,
                          replication=None)
    return DataLoader(ds, batch_size=per_device, collate_fn=_tokens_batch, num_workers=cfg.num_workers,
                      drop_last=True)


# --- evaluation sets ---------------------------------------------------------------------------------

class EvalSet:
    """A fixed held-out set, split over ranks, iterated in batches of `batch_size`."""

    def __init__(self, name: str, cfg: EvalSetConfig, batch_size: int) -> None:
        key = f"data.eval.{name}"
        info = dataset_info(cfg.path, key)
        check_kind(info, cfg.kind, key)
        self.name, self.batch_size, self.kind = name, batch_size, cfg.kind
        if cfg.kind == "sft":
            examples = SftDataset(info.path, cfg.select, key, cfg.mask_prompt).examples
        else:
            reader = MixReader(info.path)
            rows = parse_select(cfg.select, reader.num_samples, f"{key}.select") if cfg.select else \
                range(reader.num_samples)
            tokens, _ = reader.gather(list(rows))
            examples = [(t.astype(np.int64), t.astype(np.int64)) for t in tokens]
        if cfg.max_samples is not None:
            examples = examples[:cfg.max_samples]
        if not examples:
            raise ConfigError(f"{key}: no samples")
        world, rank = dist.get_world_size(), dist.get_global_rank()
        # Every rank runs the same number of batches: sharded models need all ranks in each forward.
        self.total = len(examples) // world * world
        if self.total == 0:
            raise ConfigError(f"{key}: {len(examples)} samples cannot be split over {world} ranks")
        self.examples = examples[rank:self.total:world]

    def batches(self, limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        count = 0
        for start in range(0, len(self.examples), self.batch_size):
            if limit is not None and count >= limit:
                return
            count += 1
            yield pad_examples(self.examples[start:start + self.batch_size])
