"""Trainer options at scale, checked on CPU: `compile`, `deterministic`, the train loader's
`pin_memory` / `persistent_workers` reach Composer and the DataLoader; a persistent worker starts its
next pass at the beginning of the mix after a resume; the options' recipe errors name their key."""

from __future__ import annotations

import atexit
import os
from pathlib import Path

import midmix
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from trainutil import G, recipe  # noqa: E402


@pytest.fixture(scope="module")
def data(train_data: Path) -> Path:
    return train_data  # the session's prepared sources and mixes (conftest.train_data)


@pytest.fixture
def in_process():
    """Composer's single-process setup fills in RANK, WORLD_SIZE, … in os.environ: put it back, so later
    tests' launchers start from the environment they had."""
    saved = dict(os.environ)
    yield
    from midmix.train.run import close_dist

    close_dist()
    os.environ.clear()
    os.environ.update(saved)


def test_compile_deterministic_and_loader_options_reach_the_trainer(data, tmp_path, in_process) -> None:
    from midmix.train.config import from_dict
    from midmix.train.run import build_trainer, torch_flags_restored

    r = recipe(
        data,
        tmp_path / "opts",
        compile=True,
        deterministic=True,
        data__train__num_workers=2,
        data__train__pin_memory=True,
    )
    assert not torch.are_deterministic_algorithms_enabled()
    with torch_flags_restored():
        trainer = build_trainer(from_dict(r), r)
        try:
            # Composer's compile_config: the trainer compiles the (wrapped) model's forward with
            # torch.compile, which marks the function it stands in for (torch._dynamo's attribute).
            forward = trainer.state.model.forward
            assert getattr(forward, "_torchdynamo_orig_callable", None) is not None
            assert not getattr(forward, "_torchdynamo_disable", False)
            # deterministic_mode
            assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
            loader = trainer.state.train_dataloader
            assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (2, True, True)
        finally:
            trainer.close()
            atexit.unregister(trainer.engine._close)
    assert not torch.are_deterministic_algorithms_enabled()  # the next run in this process starts clean

    # The defaults: no compile, no deterministic kernels, no pinning on CPU, no workers to keep.
    r = recipe(data, tmp_path / "defaults")
    trainer = build_trainer(from_dict(r), r)
    try:
        assert getattr(trainer.state.model.forward, "_torchdynamo_orig_callable", None) is None
        assert not torch.are_deterministic_algorithms_enabled()
        loader = trainer.state.train_dataloader
        assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)
    finally:
        trainer.close()
        atexit.unregister(trainer.engine._close)


@pytest.mark.parametrize("kind", ["tokens", "sft"])
def test_worker_options_apply_to_every_train_loader(data, kind) -> None:
    from midmix.train.config import DataSetConfig
    from midmix.train.recipe_loaders import dataset_info, train_loader

    path = data / ("code-mix" if kind == "tokens" else "gsm8k")
    cfg = DataSetConfig(path=str(path), kind=kind, num_workers=2)
    info = dataset_info(cfg.path, "data.train")
    on_gpu = train_loader(cfg, info, G, 0, on_gpu=True)
    assert (on_gpu.pin_memory, on_gpu.persistent_workers) == (True, True)  # the defaults on GPU with workers
    cfg.pin_memory, cfg.persistent_workers = False, False
    off = train_loader(cfg, info, G, 0, on_gpu=True)
    assert (off.pin_memory, off.persistent_workers) == (False, False)


def test_a_persistent_worker_starts_the_next_pass_at_the_beginning(data) -> None:
    """Composer restores a resumed run's position into the dataset before its first pass; the workers
    copy the dataset once, and a persistent one keeps its copy for the next epoch."""
    from midmix.loaders import MixDataset, MixLoader

    def steps(loader: MixLoader) -> list[int]:
        return [step_of[b["input_ids"].numpy().tobytes()] for b in loader]

    plain = MixDataset(data / "code-mix", G, rank=0, world_size=1)
    step_of = {plain.batch(s)["input_ids"].numpy().tobytes(): s for s in range(plain.num_steps)}
    assert len(step_of) == plain.num_steps
    ds = MixDataset(data / "code-mix", G, rank=0, world_size=1)
    ds.load_state_dict(ds.state_dict(5 * G))
    loader = MixLoader(ds, num_workers=2, persistent_workers=True)
    assert steps(loader) == list(range(5, ds.num_steps))  # the resumed pass
    assert steps(loader) == list(range(ds.num_steps))  # the next epoch, by the same workers
    assert steps(loader) == list(range(ds.num_steps))


def test_option_errors_name_the_key(tmp_path: Path) -> None:
    from midmix.train.config import from_dict

    base = {"data": {"train": {"path": "x"}}}
    with pytest.raises(midmix.ConfigError, match=r"data\.train\.persistent_workers: needs data\.train\.num_workers"):
        from_dict({"data": {"train": {"path": "x", "persistent_workers": True}}})
    with pytest.raises(midmix.ConfigError, match=r"data\.train\.num_workers: must be at least 0"):
        from_dict({"data": {"train": {"path": "x", "num_workers": -1}}})
    with pytest.raises(midmix.ConfigError, match=r"compile: expected bool"):
        from_dict({**base, "compile": "max-autotune"})
    with pytest.raises(midmix.ConfigError, match=r"deterministic: expected bool"):
        from_dict({**base, "deterministic": 1})
    cfg = from_dict({"data": {"train": {"path": "x", "num_workers": 2}}})
    assert (cfg.compile, cfg.deterministic, cfg.data.train.pin_memory, cfg.data.train.persistent_workers) == (
        False,
        False,
        None,
        None,
    )
