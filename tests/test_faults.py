"""The fault matrix: every artifact midmix reads × each kind of damage × every reader.

Each cell damages one file of a clean data root (two prepared sources, one zstd-compressed, an index mix
over them and the registry), then runs every reader on it. A reader either fails with a midmix error that
names the damaged file (or, for a file deleted, its directory), or returns exactly what it returns on the
clean data. Nothing in between: output that differs with no error is the bug this file exists to catch.

A new artifact joins by adding a row to ARTIFACTS (and, where "edit" needs to know the file, to EDITS);
a new command or reader by adding a function to READERS. The whole matrix runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import midmix
import numpy as np
import pytest
from midmix import registry
from midmix.errors import MidmixError

TOKENIZER = Path(__file__).parent / "fixtures" / "pythia.json"
SEQ_LEN = 16
MIX_SAMPLES = 48
BATCH = 8


def _corpus(path: Path, order: int) -> None:
    docs = [f"document {i}: the {'quick' if i % 3 else 'slow'} fox {i * 7} jumps over {i % 5} dogs." for i in range(80)]
    if order:
        docs.reverse()
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def _build(root: Path, order: int) -> None:
    """A data root: prepared `a` (raw shards), `b` (zstd shards), the index mix `mix` over them, and the
    tokenizer they were prepared with (which `inspect --show` reads back)."""
    data = root / "data"
    _corpus(root / "a.jsonl", order)
    _corpus(root / "b.jsonl", 1 - order)
    tokenizer = root / "tokenizer.json"
    tokenizer.write_bytes(TOKENIZER.read_bytes())
    if order:  # the other root's is another valid tokenizer (what "replace" copies over the clean one)
        _edit_json(tokenizer, _edit_tokenizer)
    midmix.prepare("a", [root / "a.jsonl"], tokenizer=tokenizer, seq_len=SEQ_LEN, data_root=data, size_limit=1024)
    midmix.prepare(
        "b",
        [root / "b.jsonl"],
        tokenizer=tokenizer,
        seq_len=SEQ_LEN,
        data_root=data,
        size_limit=1024,
        compression="zstd",
    )
    phases = [midmix.Phase.samples(MIX_SAMPLES, {"a": 0.5, "b": 0.5})]
    midmix.build_mix(phases, data / "mix", data_root=data, seed=3)


# (file, what "replace" copies over it: the same file of a root built from the documents in another order)
ARTIFACTS = [
    "data/a/index.json",
    "data/a/midmix.json",
    "data/a/shard.00000.mds",
    "data/b/shard.00001.mds.zstd",
    "data/mix/midmix.json",
    "data/mix/mix.source.u8",
    "data/mix/mix.sample.u32",
    "data/registry.json",
    "tokenizer.json",
    "cache/b",  # the decompressed copy of a shard of `b`, filled by the first read (see _cached)
]


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value, indent=2))


def _edit_bytes(path: Path) -> None:
    """Another valid value: two different neighbouring bytes swapped (a token id, a source number)."""
    b = bytearray(path.read_bytes())
    i = next(i for i in range(len(b) // 2, len(b) - 1) if b[i] != b[i + 1])
    b[i], b[i + 1] = b[i + 1], b[i]
    path.write_bytes(bytes(b))


def _edit_registry(v: dict) -> None:
    v["a"]["path"] = v["b"]["path"]  # a name pointed at another dataset (its fingerprint left as it was)


def _edit_index(v: dict) -> None:
    v["shards"][0]["column_encodings"] = ["ndarray:uint8:32"]  # same bytes, half the tokens each


def _edit_manifest(v: dict) -> None:
    if v["kind"] == "mix":
        v["seed"] += 1
    else:
        v["counts"]["samples"] -= 1


def _edit_tokenizer(v: dict) -> None:
    vocab = v["model"]["vocab"]
    vocab["the"], vocab["Ġthe"] = vocab["Ġthe"], vocab["the"]  # two tokens' ids swapped: another valid vocabulary


EDITS: dict[str, Callable[[Path], None]] = {
    "tokenizer.json": lambda p: _edit_json(p, _edit_tokenizer),
    "index.json": lambda p: _edit_json(p, _edit_index),
    "midmix.json": lambda p: _edit_json(p, _edit_manifest),
    "registry.json": lambda p: _edit_json(p, _edit_registry),
}


def _flip(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0x10
    path.write_bytes(bytes(b))


def _damage(kind: str, path: Path, other: Path) -> None:
    if kind == "move":
        # The dataset's directory moved away (a file outside a dataset: the file itself).
        moved = path.parent if path.parent.name not in ("data", "") and path.parent.parent.name == "data" else path
        moved.rename(moved.with_name(moved.name + "-moved"))
        return
    if kind == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "flip":
        _flip(path)
    elif kind == "edit":
        EDITS.get(path.name, _edit_bytes)(path)
    elif kind == "delete":
        path.unlink()
    elif kind == "replace":
        shutil.copyfile(other, path)
    else:
        raise AssertionError(kind)


DAMAGES = ["truncate", "flip", "edit", "delete", "replace", "move"]


# -- readers: each returns a digest of what it read -------------------------------------------------------


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _tokens(path: Path) -> str:
    reader = midmix.Dataset.open(path).tokens()
    tokens, source = reader.read_strided(0, 1, reader.num_samples)
    return _digest(tokens, source if source is not None else "")


def read_samples(root: Path, out: Path) -> str:
    data = root / "data"
    got = []
    for name in ("a", "b", "mix"):
        ds = midmix.Dataset.open(name, data_root=data)
        got.append(_tokens(ds.path))
        if ds.index_mix is None:
            got.append(_digest([{k: np.asarray(v).tolist() for k, v in s.items()} for s in ds]))
    return _digest(got)


def verify(root: Path, out: Path) -> str:
    data = root / "data"
    return _digest(
        [
            (lambda r: (r.kind, r.samples, r.shards, r.tokens_checked))(midmix.verify(n, data_root=data))
            for n in ("a", "b", "mix")
        ]
    )


def stats(root: Path, out: Path) -> str:
    data = root / "data"
    return _digest([midmix.count_unigrams_dataset(registry.resolve(n, data)).counts for n in ("a", "b", "mix")])


def build_mix(root: Path, out: Path) -> str:
    phases = [midmix.Phase.samples(MIX_SAMPLES, {"a": 0.5, "b": 0.5})]
    midmix.build_mix(phases, out / "rebuilt", data_root=root / "data", seed=3, materialize=True, register=False)
    return _tokens(out / "rebuilt")


def export(root: Path, out: Path) -> str:
    midmix.export("mix", out / "exported", data_root=root / "data")
    return _tokens(out / "exported")


def loader(root: Path, out: Path) -> str:
    from midmix.loaders import MixDataset, MixLoader

    ds = MixDataset(registry.resolve("mix", root / "data"), BATCH, rank=0, world_size=1)
    return _digest([b["input_ids"].numpy() for b in MixLoader(ds)], ds.fingerprint)


def _cli(root: Path, *args: str) -> str:
    """A CLI command's output with the root's path taken out; a failure raises the error it printed."""
    from click.testing import CliRunner
    from midmix.cli import main

    r = CliRunner().invoke(main, [*args, "--data-root", str(root / "data")])
    if r.exit_code == 1 and "error" in r.output:
        raise MidmixError(r.output)
    assert r.exit_code == 0 and r.exception is None, (r.output, r.exception)
    return r.output.replace(str(root), "ROOT")


def inspect(root: Path, out: Path) -> str:
    """Decoded samples of every dataset, with the tokenizer each records (timings and sizes left out)."""
    shown = []
    for name in ("a", "b", "mix"):
        text = _cli(root, "inspect", name, "--show", "0", "--show", "5")
        shown.append(text[text.index("--- sample") :])
    return _digest(shown)


def proximity(root: Path, out: Path) -> str:
    _cli(root, "proximity", "--target", "a", "--base", "b", "--candidates", "mix", "--json", str(out / "p.json"))
    return _digest(json.loads((out / "p.json").read_text()))


READERS: list[Callable[[Path, Path], str]] = [
    read_samples,
    verify,
    stats,
    build_mix,
    export,
    loader,
    inspect,
    proximity,
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    clean = tmp_path_factory.mktemp("clean")
    _build(clean, 0)
    other = tmp_path_factory.mktemp("other")
    _build(other, 1)
    expected = {r.__name__: r(clean, tmp_path_factory.mktemp(f"clean-{r.__name__}")) for r in READERS}
    return clean, other, expected


def _cached(root: Path, env: pytest.MonkeyPatch) -> Path:
    """The decompressed copy of `b`'s first shard in the root's own cache, after a first read made it."""
    env.setenv("MIDMIX_CACHE_DIR", str(root / "cache"))
    read_samples(root, root)
    entries = sorted((root / "cache").glob("*/*shard.00000*"))
    assert entries, sorted((root / "cache").rglob("*"))
    return entries[0]


def _fresh(dst: Path, order: int = 0) -> Path:
    """A root of its own for one cell (built, not copied: an index mix records its sources' absolute paths,
    so a copy's mix would read the original's sources). Identical to `roots`' by determinism."""
    dst.mkdir()
    _build(dst, order)
    return dst


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_damage_is_an_error_naming_the_file_or_changes_nothing(
    roots, artifact: str, damage: str, tmp_path: Path, monkeypatch
) -> None:
    clean, other, expected = roots
    if (artifact, damage) == ("data/registry.json", "replace"):
        pytest.skip("a whole other valid registry is the user naming other data, which is theirs to do")
    if (artifact, damage) == ("cache/b", "move"):
        pytest.skip("a cache entry moved is one deleted: the other damage already covers it")
    root = _fresh(tmp_path / "root")
    monkeypatch.setenv("MIDMIX_CACHE_DIR", str(root / "cache"))  # each cell's cache its own
    if artifact == "cache/b":
        other_path = _cached(other, monkeypatch)
        path = _cached(root, monkeypatch)
    else:
        path, other_path = root / artifact, other / artifact
    _damage(damage, path, other_path)  # replace: the same file of other (valid) content
    # A deleted file may leave its directory no dataset; a replaced manifest makes it another one.
    names = [path.name] if damage not in ("delete", "replace", "move") else [path.name, str(path.parent)]
    if path.name == "registry.json":
        names.append("registry")
    if path.name == "tokenizer.json" and damage in ("delete", "move"):
        names.append(str(path))
    wrong = []
    for reader in READERS:
        out = tmp_path / f"out-{reader.__name__}"
        out.mkdir()
        try:
            got = reader(root, out)
        except MidmixError as e:
            if not any(n in str(e) for n in names):
                wrong.append(f"{reader.__name__}: error does not name {path.name}: {e}")
            continue
        if got != expected[reader.__name__]:
            wrong.append(f"{reader.__name__}: returned other data, no error")
    assert not wrong, "\n".join(wrong)


def test_an_error_in_a_dataloader_worker_reaches_the_loop_naming_the_sample(roots, tmp_path: Path) -> None:
    """midmix's errors pickle (they are classes of `midmix.errors`), so a damaged batch read in a worker
    process stops the loop with that error instead of the worker's batches silently going missing."""
    import pickle

    from midmix.loaders import MixDataset, MixLoader

    root = _fresh(tmp_path / "root")
    shard = root / "data" / "a" / "shard.00000.mds"
    _flip(shard)
    ds = MixDataset(registry.resolve("mix", root / "data"), BATCH, rank=0, world_size=1)
    with pytest.raises(midmix.DatasetError) as caught:
        list(MixLoader(ds, num_workers=2))
    assert "shard.00000.mds" in str(caught.value) and "position" in str(caught.value), caught.value
    e = pickle.loads(pickle.dumps(caught.value))
    assert type(e) is midmix.DatasetError and str(e) == str(caught.value)


def test_training_with_two_workers_stops_at_a_damaged_batch_naming_it(tmp_path: Path) -> None:
    """The standard training path: `num_workers: 2` on a mix whose code source was damaged after the mix was
    built. The run stops with the reader's error, naming the shard and the position, and writes no summary.
    (About 30 s: one tiny training process that gets as far as the first batch with code in it.)"""
    from trainutil import prepare_train_data, recipe, start

    data = tmp_path / "data"
    prepare_train_data(data)
    _flip(data / "code" / "shard.00000.mds")
    # The run (and its TMPDIR) under a short path: the workers' sockets live there (see the next test).
    runs = Path(tempfile.mkdtemp(prefix="mm-faults-"))
    try:
        r = recipe(data, runs / "damaged", data__train__num_workers=2)
        proc = start(r)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode != 0, out[-3000:]
        assert "DatasetError" in out and "code/shard.00000.mds: its bytes hash to xxh3_64" in out, out[-3000:]
        assert "reading position" in out, out[-3000:]
        assert not (runs / "damaged" / "summary.json").exists()
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def test_a_tmpdir_too_long_for_the_workers_sockets_is_refused_not_a_hang(monkeypatch, tmp_path: Path) -> None:
    """With it, torch's worker fails to hand over each batch in a background thread and the loop waits for ever."""
    pytest.importorskip("composer")
    from midmix.train.recipe_loaders import check_worker_tmpdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("x" * 80)))
    with pytest.raises(midmix.ConfigError, match="needs a shorter TMPDIR"):
        check_worker_tmpdir()
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    check_worker_tmpdir()


@pytest.mark.parametrize("damage", ["flip", "replace"])
@pytest.mark.parametrize(
    "artifact",
    ["data/a/shard.00000.mds", "data/b/shard.00001.mds.zstd", "data/mix/mix.source.u8", "data/mix/mix.sample.u32"],
)
def test_a_file_rewritten_while_open_is_an_error_or_changes_nothing(
    roots, artifact: str, damage: str, tmp_path: Path, monkeypatch
) -> None:
    """The damage lands after the loader and a dataset reader were opened and before they read: a second
    process rewriting a file in place. (Once a shard has been read and verified, a later rewrite in place
    is beyond what a reader can see without hashing every read: the lazy check is once per process.)"""
    from midmix.loaders import MixDataset, MixLoader

    clean, other, expected = roots
    root = _fresh(tmp_path / "root")
    monkeypatch.setenv("MIDMIX_CACHE_DIR", str(root / "cache"))
    ds = MixDataset(registry.resolve("mix", root / "data"), BATCH, rank=0, world_size=1)
    reader = midmix.Dataset.open(root / "data" / "mix").tokens()
    path = root / artifact
    if damage == "flip":
        _flip(path)
    else:
        with path.open("r+b") as f:  # in place: the same inode, as a second writer would
            f.write((other / artifact).read_bytes()[: path.stat().st_size])
    for name, read in (
        ("loader", lambda: _digest([b["input_ids"].numpy() for b in MixLoader(ds)], ds.fingerprint)),
        ("reader", lambda: _digest(*reader.read_strided(0, 1, reader.num_samples))),
    ):
        try:
            got = read()
        except MidmixError as e:
            assert path.name in str(e), f"{name}: error does not name {path.name}: {e}"
            continue
        want = expected["loader"] if name == "loader" else None
        if want is not None:
            assert got == want, f"{name}: returned other data, no error"
