"""Run as one rank: read a mix in training order with StreamingDataset or the midmix loader and
write the batches this rank saw (token rows as hex) to a JSON file. Used by test_training_order.

midmix loader only: with KILL_AFTER=k, save the loader state (as Composer checkpoints it) to STATE after
k batches and kill this process; with STATE alone, resume from that state."""

from __future__ import annotations

import json
import os
import signal
import sys

import torch
from torch.utils.data import DataLoader


def main() -> None:
    kind, directory, out = sys.argv[1], sys.argv[2], sys.argv[5]
    per_device, workers = int(sys.argv[3]), int(sys.argv[4])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        # Create the process group before any dataset (reference notes §D: avoids start-up hangs).
        torch.distributed.init_process_group("gloo")
    if kind == "streaming":
        from streaming import StreamingDataset

        ds = StreamingDataset(local=directory, shuffle=False, num_canonical_nodes=1, batch_size=per_device)
        loader = DataLoader(ds, batch_size=per_device, num_workers=workers)
        batches = [[row.numpy().tobytes().hex() for row in b["tokens"]] for b in loader]
    else:
        from midmix.loaders import MixDataset, MixLoader

        ds = MixDataset(directory, per_device * world)
        kill_after, state = int(os.environ.get("KILL_AFTER", "0")), os.environ.get("STATE", "")
        if state and not kill_after:
            with open(state) as f:
                ds.load_state_dict(json.load(f))
        loader = MixLoader(ds, num_workers=workers)
        batches = []
        for b in loader:
            batches.append([row.to(torch.uint16).numpy().tobytes().hex() for row in b["input_ids"]])
            if kill_after and len(batches) == kill_after:
                with open(state, "w") as f:
                    json.dump(ds.state_dict(kill_after * per_device * world, True), f)
                os.kill(os.getpid(), signal.SIGKILL)
    with open(out, "w") as f:
        json.dump(batches, f)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
