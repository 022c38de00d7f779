"""Shared test helpers. MDS files are parsed here with numpy straight from the format spec, as an
oracle independent of midmix's own reader."""

from __future__ import annotations

import atexit
import fcntl
import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (a session fixture: one cluster for the Slurm tests)

# torch on one thread in every test process (set before torch is imported, inherited by the runs the tests
# start): `make test` runs two pytest workers on a 2-core machine, and torch's default of a thread per core
# in each process would oversubscribe it. Runs whose numbers are compared all run under this setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# What the tests prepare is registered in a data root of the test run's own, never in ./data.
os.environ["MIDMIX_DATA_ROOT"] = tempfile.mkdtemp(prefix="midmix-test-root-")
atexit.register(shutil.rmtree, os.environ["MIDMIX_DATA_ROOT"], ignore_errors=True)
# ... and readers decompress shards into a cache of its own (subprocesses inherit both).
os.environ["MIDMIX_CACHE_DIR"] = tempfile.mkdtemp(prefix="midmix-test-cache-")
atexit.register(shutil.rmtree, os.environ["MIDMIX_CACHE_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The offline corpora; tests that need them skip when absent. MIDMIX_TEST_SHARED points elsewhere
# (CI sets it to a missing path to check that the suite passes without them).
SHARED = Path(os.environ.get("MIDMIX_TEST_SHARED") or ROOT.parent / "shared" / "data")
PYTHIA = FIXTURES / "pythia.json"
GPT2 = SHARED / "tokenizers" / "gpt2.json"


def needs_shared() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present")


def shard_samples(path: Path) -> list[bytes]:
    """Every sample's bytes in one uncompressed shard file."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<I", data, 0)
    offsets = struct.unpack_from(f"<{n + 1}I", data, 4)
    assert offsets[-1] == len(data)
    return [data[offsets[i] : offsets[i + 1]] for i in range(n)]


def read_tokens(directory: Path) -> np.ndarray:
    """All `tokens` samples of a pretraining dataset, as one (samples, seq_len) array."""
    index = json.loads((directory / "index.json").read_text())
    rows = []
    for shard in index["shards"]:
        assert shard["column_names"] == ["tokens"]
        dtype = np.dtype(shard["column_encodings"][0].split(":")[1]).newbyteorder("<")
        for s in shard_samples(directory / shard["raw_data"]["basename"]):
            rows.append(np.frombuffer(s, dtype=dtype))
    if not rows:
        return np.zeros((0, 0), dtype=np.uint32)
    return np.stack(rows)


def token_stream(directory: Path) -> np.ndarray:
    """The packed samples followed by the kept tail (for datasets prepared as a task part)."""
    report = json.loads((directory / "midmix.json").read_text())
    tail = np.array(report["task"]["tail"] if report.get("task") else [], dtype=np.int64)
    return np.concatenate([read_tokens(directory).reshape(-1).astype(np.int64), tail])


def report(directory: Path) -> dict:
    return json.loads((directory / "midmix.json").read_text())


def tree_bytes(directory: Path, ignore_run: bool = True) -> dict[str, bytes]:
    """Every file's bytes; midmix.json without its run-specific `run` section."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if ignore_run and p.name == "midmix.json":
                obj = json.loads(data)
                obj.pop("run", None)
                data = json.dumps(obj, sort_keys=True).encode()
            out[str(p.relative_to(directory))] = data
    return out


def mix_of(sources, phases, out, **kw):
    """`midmix.build_mix` with (name, path) sources and phases as (kind, length, [(name, weight)], ramp)."""
    import midmix

    return midmix.build_mix([midmix.Phase(*p) for p in phases], out, sources=dict(sources), **kw)


# -- Test distribution and shared artifacts ------------------------------------------------------------------
# `make test` runs pytest-xdist with `--dist loadgroup`: each module's tests stay in one worker (its module
# fixtures are built once), the modules that start the Slurm cluster share one worker (and one cluster, whose
# munged is machine-wide), and the longest modules are handed out first so no worker starts one late.
SLURM_MODULES = {"test_slurm_cluster", "test_launchers"}
LONGEST_FIRST = [
    "test_launchers",
    "test_launchers_cpu_grid",
    "test_train",
    "test_train_checkpoints",
    "test_experiment",
    "test_tokenizer_exact",
    "test_training_order",
    "test_train_tracking",
]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.module.__name__ if item.module is not None else item.nodeid.split("::")[0]

    for item in items:
        name = module(item)
        item.add_marker(pytest.mark.xdist_group("slurm" if name in SLURM_MODULES else name))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(module(item), len(rank)))  # stable: file order otherwise


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run when xdist's groups cannot take: pytest-xdist 3.8 groups a test by rewriting its
    `item._nodeid`, which pytest 9.2 no longer reads. Every test would be scheduled alone, and two workers
    would start two Slurm clusters sharing, and stopping, one machine-wide munged."""
    if config.getoption("dist", "no") != "loadgroup" or os.environ.get("PYTEST_XDIST_WORKER"):
        return

    class Probe(pytest.Item):
        def runtest(self) -> None:
            pass

    probe = object.__new__(Probe)
    probe._nodeid = "probe@group"  # what xdist's worker does to every grouped test
    try:
        grouped = probe.nodeid == "probe@group"
    except AttributeError:
        grouped = False
    if not grouped:
        raise pytest.UsageError(
            f"pytest-xdist {importlib.metadata.version('pytest-xdist')} cannot group tests under pytest "
            f"{pytest.__version__} (--dist loadgroup): install the versions pyproject.toml pins"
        )


@pytest.fixture(scope="module", autouse=True)
def data_root_of_the_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A name means one directory for good, and test modules reuse names: each module's fixtures register
    theirs in a data root of the module's own."""
    own = tmp_path_factory.mktemp("module-data-root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIDMIX_DATA_ROOT", str(own))
        yield own


@pytest.fixture(autouse=True)
def data_root_of_the_test(
    data_root_of_the_module: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """... and each test in one of its own, which starts with what its module's fixtures registered."""
    shared = data_root_of_the_module
    own = tmp_path_factory.mktemp("data-root")
    if (shared / "registry.json").exists():
        shutil.copyfile(shared / "registry.json", own / "registry.json")
    monkeypatch.setenv("MIDMIX_DATA_ROOT", str(own))
    return own


def session_dir(factory: pytest.TempPathFactory) -> Path:
    """A directory of this test session shared by all its worker processes (xdist gives each worker a
    `popen-gwN` subdirectory of it)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(dir)` run once per test session, by whichever worker asks first; the others wait for it (a
    file lock) and get the same directory. Tests read it: what a test changes, it copies first."""
    root = session_dir(factory) / "built-once"
    root.mkdir(exist_ok=True)
    out, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if out.exists():
                shutil.rmtree(out)  # left by a worker whose build failed: this one builds afresh
            out.mkdir()
            build(out)
            done.touch()
    return out


# -- Train once, branch many: the tiny runs the training tests share ------------------------------------------


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo data prepared for the tiny runs (`trainutil.prepare_train_data`)."""
    from trainutil import prepare_train_data

    return built_once(tmp_path_factory, "train-data", prepare_train_data)


class TinyRuns:
    """Finished tiny runs of `trainutil.recipe`, each trained the first time a test asks for it (its run
    directory; its recipe beside it):
    - `base`: prose only (base-mix), checkpoints every 5 steps and at BRANCH;
    - `scheduled`: the code-mix schedule in one run, a full checkpoint every 4 steps;
    - `branch`: from `base` at BRANCH on the code-mix, with gradient alignment;
    - `sharded`: `scheduled` on 2 gloo ranks with FSDP2 and sharded checkpoints."""

    def __init__(self, data: Path, factory: pytest.TempPathFactory) -> None:
        self.data, self.factory = data, factory

    def __getitem__(self, name: str) -> Path:
        from trainutil import BRANCH, recipe, train

        changes: dict[str, object] = {}
        ranks = 1
        if name == "base":
            changes = {
                "data__train__path": str(self.data / "base-mix"),
                "checkpoint": {"interval": "5ba", "steps": [BRANCH]},
                "callbacks": {"forgetting": {"eval": "general", "interval": "4ba"}, "audit": True},
            }
        elif name == "branch":
            callbacks = recipe(self.data, Path("x"))["callbacks"]
            callbacks["gradient_alignment"] = {"probe": "general", "interval": "3ba"}
            changes = {"branch": {"run": str(self["base"]), "step": BRANCH}, "callbacks": callbacks}
        elif name == "sharded":
            changes, ranks = {"fsdp": {"state_dict_type": "sharded"}}, 2
        elif name != "scheduled":
            raise KeyError(name)

        def build(d: Path) -> None:
            train(recipe(self.data, d / name, **changes), ranks=ranks)

        return built_once(self.factory, f"run-{name}", build) / name


@pytest.fixture(scope="session")
def tiny_runs(train_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    pytest.importorskip("composer")
    return TinyRuns(train_data, tmp_path_factory)
