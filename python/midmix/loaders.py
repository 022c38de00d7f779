"""The PyTorch loaders: a mix in training order, and SFT examples — memory-mapped and Rust-backed.

Global step s is samples `[s·G, (s+1)·G)` of the dataset, as `build-mix` wrote them. Within a
global batch, rank r of W gets samples `s·G + r + W·j` (j < G/W): the same strided layout
`streaming.StreamingDataset(shuffle=False, num_canonical_nodes=1)` gives, so both loaders feed
each device the same samples. DataLoader workers take whole per-device batches in turn, which the
DataLoader's in-order fetching puts back in step order.

Use it through `MixLoader(dataset, num_workers=N)` (a `DataLoader` with `batch_size=None`: the
dataset yields whole batches), which also makes a resume position apply to the next pass only.
`SftDataset` reads `prepare --mode sft` examples one at a time, from shards kept mapped, and
`pad_examples` batches them. Needs torch (`pip install 'midmix[train]'`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from midmix.errors import ConfigError
from midmix.manifest import MixManifest, read_manifest
from midmix.registry import SampleReader, TokenReader, resolve

IGNORE = -100  # the label of tokens that are not scored (SFT prompts, padding)


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


R = TypeVar("R", TokenReader, SampleReader)


class _MappedShards(Generic[R]):
    """Holds a Rust reader over `self.path`, opened on first use and never pickled, so each DataLoader
    worker process maps the shards itself."""

    path: Path
    _reader_type: type[R]
    _reader: R | None = None

    @property
    def reader(self) -> R:
        if self._reader is None:
            self._reader = self._reader_type(self.path)
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None
        return state


class Batch(dict):
    """A per-device batch. A DataLoader with a `batch_size` would stack several of them into one
    [batch_size, B, seq_len] tensor, which trains on the wrong shape or silently reshapes: its collate
    function rebuilds each item through `update`, which refuses that."""

    def update(self, *args: Any, **kwargs: Any) -> None:
        new = dict(*args, **kwargs)
        ids = new.get("input_ids")
        if ids is not None and getattr(ids, "ndim", 2) != 2:
            raise ConfigError(
                "a MixDataset yields whole per-device batches: read it with MixLoader(dataset), or a "
                f"DataLoader with batch_size=None (got {tuple(ids.shape)} stacked)"
            )
        super().update(new)


class MixDataset(_MappedShards[TokenReader], IterableDataset):
    """Per-device batches of a mix (or any prepared pretraining dataset) in training order.

    Each item is `{"input_ids": LongTensor[B, seq_len], "source": ByteTensor[B]}` (no `source` for
    plain prepared datasets), where B = global_batch / world_size.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        global_batch: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        data_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = resolve(path, data_root)  # a directory, or a registered name
        env_rank, env_world = _world()
        self.rank = env_rank if rank is None else rank
        self.world_size = env_world if world_size is None else world_size
        if global_batch < 1 or global_batch % self.world_size:
            raise ConfigError(
                f"global batch {global_batch} must be a positive multiple of the world size {self.world_size}"
            )
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is outside world size {self.world_size}")
        self.global_batch = global_batch
        self.per_device = global_batch // self.world_size
        self._reader_type = TokenReader
        self.num_steps = self.reader.num_samples // global_batch
        self._start_step = 0
        # A branch restores its base run's loader state, saved on the base's mix: only the position
        # carries over (the variant's mix shares the base's prefix by construction), not the identity.
        self.branching = False

    def __len__(self) -> int:
        # Batches per pass, also after a resume (as StreamingDataset counts): the trainer ends the
        # epoch when the iterator runs out.
        return self.num_steps

    def batch(self, step: int) -> Batch:
        """This rank's part of global step `step`: samples step·G + rank + world_size·j."""
        start = step * self.global_batch + self.rank
        tokens, source = self.reader.read_strided(start, self.world_size, self.per_device)
        out = Batch(input_ids=torch.from_numpy(tokens))
        if source is not None:
            out["source"] = torch.from_numpy(source)
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        start = self._start_step  # read now, not lazily
        if info is not None:
            # This is a worker's own copy of the dataset (MixLoader resets the main process's): a
            # persistent worker keeps it, and its next pass starts at the beginning of the mix.
            self._start_step = 0
        return self._steps(start + worker, workers)

    def _steps(self, first: int, stride: int) -> Iterator[dict[str, torch.Tensor]]:
        batch = self.batch
        for step in range(first, self.num_steps, stride):
            yield batch(step)

    # Composer saves `dataset.state_dict(sample_in_epoch, True)` and restores it with
    # `load_state_dict`, then skips spinning the loader (see the README).
    def state_dict(self, num_samples: int, from_beginning: bool = True) -> dict[str, Any]:
        done = num_samples if from_beginning else self._start_step * self.global_batch + num_samples
        return {
            "sample_in_epoch": int(done),
            "global_batch": self.global_batch,
            "num_samples": int(self.reader.num_samples),
            "fingerprint": self.fingerprint,
        }

    @cached_property
    def fingerprint(self) -> str:
        """The identity of the data read: the fingerprint `midmix.json` records (from every shard's content
        hash, and for a mix its sources' fingerprints and plan, so an index mix and its export are the same
        data). Outputs written before fingerprints: sha256 of their index.json and manifest."""
        manifest = read_manifest(self.path)
        if manifest is not None and manifest.fingerprint is not None:
            return manifest.fingerprint
        h = hashlib.sha256()
        if not isinstance(manifest, MixManifest):
            h.update((self.path / "index.json").read_bytes())
        if manifest is not None:
            drop = ("run", "elapsed_s", "form", "index")
            facts = {k: v for k, v in manifest.to_dict().items() if k not in drop}
            for source in facts.get("source_info", []):
                source.pop("path")  # the same sources moved elsewhere are the same data
            h.update(json.dumps(facts, sort_keys=True).encode())
        return h.hexdigest()

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Resume at the next global batch. Applies to the next pass only when read through MixLoader.
        A state saved on other data (unless `branching`), or one without a valid position, is refused."""
        try:
            sample = obj["sample_in_epoch"]
        except (KeyError, TypeError) as e:
            raise ConfigError(f"loader state {obj!r} has no 'sample_in_epoch'") from e
        if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample <= self.reader.num_samples:
            raise ConfigError(f"resume position {sample!r} is not a sample index in 0..{self.reader.num_samples}")
        if obj.get("global_batch", self.global_batch) != self.global_batch:
            raise ConfigError(
                f"checkpoint was taken with global batch {obj['global_batch']}, this run uses {self.global_batch}"
            )
        for key, ours in (("num_samples", self.reader.num_samples), ("fingerprint", self.fingerprint)):
            if key in obj and obj[key] != ours and not self.branching:
                raise ConfigError(
                    f"the loader state was saved on other data ({key} {obj[key]} ≠ {ours} of "
                    f"{self.path}): resume with the mix the checkpoint was trained on"
                )
        if sample % self.global_batch:
            raise ConfigError(f"resume position {sample} is not at a global-batch boundary of {self.global_batch}")
        self._start_step = sample // self.global_batch


class MixLoader(DataLoader):
    """The DataLoader for a MixDataset: one batch per item, and a resume position that applies to the
    pass being started only, so a later epoch starts at the beginning of the mix again."""

    dataset: MixDataset  # DataLoader's annotation says any Dataset: this loader is given a MixDataset only

    def __init__(self, dataset: MixDataset, num_workers: int = 0, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)

    def __iter__(self) -> Any:
        it = super().__iter__()  # workers (or the in-process iterator) have read the start by now
        self.dataset._start_step = 0
        return it


class SftDataset(_MappedShards[SampleReader], Dataset):
    """`prepare --mode sft` examples as (input_ids, labels) int64 arrays, -100 over masked prompts.

    `rows` selects examples (default: all). Each read costs one example: the shards stay mapped."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        rows: Sequence[int] | None = None,
        mask_prompt: bool = True,
        data_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = resolve(path, data_root)  # a directory, or a registered name
        self.mask_prompt = mask_prompt
        self._reader_type = SampleReader
        total = len(self.reader)
        self.rows = range(total) if rows is None else rows
        if len(self.rows) and not (0 <= min(self.rows) and max(self.rows) < total):
            raise ConfigError(f"{self.path}: selected rows fall outside its {total} examples")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.reader[self.rows[i]]
        ids = np.asarray(sample["input_ids"], dtype=np.int64)
        labels = np.asarray(sample["labels"], dtype=np.int64) if self.mask_prompt else ids.copy()
        return ids, labels


def pad_examples(examples: list[tuple[np.ndarray, np.ndarray]], multiple: int = 8) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest example (rounded up to `multiple`). Padding is never scored, and
    with causal attention it cannot change the logits of the real tokens before it."""
    width = max(len(ids) for ids, _ in examples)
    width = -(-width // multiple) * multiple
    input_ids = np.zeros((len(examples), width), dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = ids
        labels[row, : len(lab)] = lab
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}
