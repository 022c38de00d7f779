"""`--num-tasks`/`--task-index` parts merge into exactly the single-task dataset."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import midmix
import pytest
from conftest import PYTHIA, tree_bytes
from midmix import DatasetError

DEMO = Path(__file__).resolve().parent.parent / "demo" / "data"


def make_inputs(tmp_path: Path) -> list[str]:
    """Split the demo prose into several files of uneven size."""
    lines = (DEMO / "prose.jsonl").read_text().splitlines(keepends=True)
    d = tmp_path / "in"
    d.mkdir()
    cuts = [0, 5, 6, 40, 41, 90, len(lines)]
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        (d / f"part{i}.jsonl").write_text("".join(lines[a:b]))
    return [str(d), str(DEMO / "code.jsonl.zst")]


@pytest.mark.parametrize("tasks", [1, 3, 4, 9])
@pytest.mark.parametrize("mode", ["pretrain", "sft"])
def test_merged_parts_equal_single_run(tmp_path, tasks, mode) -> None:
    inputs = make_inputs(tmp_path)
    kw = dict(size_limit=200_000, hashes=["xxh3_64"])
    if mode == "sft":  # prompt = the id, response = the text
        kw.update(mode="sft", prompt_field="id", response_field="text")
    single = tmp_path / "single"
    midmix.prepare("p", inputs, tokenizer=PYTHIA, seq_len=1000, out=single, register=False, **kw)
    parts = []
    for i in range(tasks):
        part = tmp_path / f"part{i}"
        midmix.prepare("p", inputs, tokenizer=PYTHIA, seq_len=1000, out=part, num_tasks=tasks, task_index=i, **kw)
        parts.append(part)
    merged = tmp_path / "merged"
    rep = midmix.merge(list(reversed(parts)), merged).to_dict()  # order of arguments does not matter
    a, b = tree_bytes(single), tree_bytes(merged)
    ra, rb = json.loads(a.pop("midmix.json")), json.loads(b.pop("midmix.json"))
    assert a == b  # index.json and every shard byte-identical
    assert ra["counts"] == rb["counts"] and ra["inputs"] == rb["inputs"]
    assert rep["task"] is None


def test_merge_rejects_incomplete_or_foreign_parts(tmp_path) -> None:
    inputs = make_inputs(tmp_path)
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}"
        midmix.prepare("p", inputs, tokenizer=PYTHIA, seq_len=64, out=part, num_tasks=3, task_index=i)
        parts.append(part)
    with pytest.raises(DatasetError, match="3 parts were given|part 0 of 3"):
        midmix.merge(parts[:2], tmp_path / "m")
    other = tmp_path / "other"
    midmix.prepare("p", inputs, tokenizer=PYTHIA, seq_len=32, out=other, num_tasks=3, task_index=2)
    with pytest.raises(DatasetError, match="seq_len"):
        midmix.merge(parts[:2] + [other], tmp_path / "m")
    single = tmp_path / "single"
    midmix.prepare("p", inputs, tokenizer=PYTHIA, seq_len=64, out=single, register=False)
    with pytest.raises(DatasetError, match="--num-tasks"):
        midmix.merge([single], tmp_path / "m")
    shutil.copytree(parts[1], tmp_path / "dup")
    with pytest.raises(DatasetError, match="missing or given twice"):
        midmix.merge([parts[0], parts[1], tmp_path / "dup"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_merge_refuses_parts_of_another_prepare_run(tmp_path) -> None:
    """Parts with the same options but other inputs (or another text field) would merge into a dataset
    whose inputs list one file twice and miss another: refused, naming the part."""
    inputs = make_inputs(tmp_path)
    parts = []
    for i in range(2):
        parts.append(tmp_path / f"part{i}")
        midmix.prepare("p", inputs, tokenizer=PYTHIA, seq_len=64, out=parts[-1], num_tasks=2, task_index=i)
    other_inputs = [inputs[0], str(DEMO / "prose_val.jsonl")]
    foreign = tmp_path / "foreign1"
    midmix.prepare("p", other_inputs, tokenizer=PYTHIA, seq_len=64, out=foreign, num_tasks=2, task_index=1)
    with pytest.raises(DatasetError, match=r"foreign1.*prepare run"):
        midmix.merge([parts[0], foreign], tmp_path / "m")
    records = tmp_path / "records"
    (records / "in").mkdir(parents=True)
    for f in Path(inputs[0]).iterdir():  # the same files, with the text under another key
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        (records / "in" / f.name).write_text("".join(json.dumps({"body": r["text"]}) + "\n" for r in rows))
    midmix.prepare(
        "p",
        [str(records / "in")],
        tokenizer=PYTHIA,
        seq_len=64,
        out=tmp_path / "field1",
        num_tasks=2,
        task_index=1,
        text_field="body",
    )
    with pytest.raises(DatasetError, match="text field differs"):
        midmix.merge([parts[0], tmp_path / "field1"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("form", ["parquet", "jsonl", "text-per-line"])
def test_one_large_file_splits_between_tasks(tmp_path, form: str) -> None:
    """`--num-tasks 4` on one file: four non-empty parts (a JSONL file cut between lines, a Parquet file between
    row groups), whose merge is byte-identical to a single run, errors still naming the line in the whole
    file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [json.loads(line)["text"] for line in (DEMO / "prose.jsonl").read_text().splitlines()]
    if form == "parquet":
        src = tmp_path / "one.parquet"
        pq.write_table(pa.table({"text": docs}), src, row_group_size=16)
    elif form == "jsonl":
        src = tmp_path / "one.jsonl"
        src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    else:
        src = tmp_path / "one.txt"
        src.write_text("".join(d.replace("\n", " ") + "\n" for d in docs))
    kw = dict(tokenizer=PYTHIA, seq_len=256, size_limit=100_000, register=False, text_per_line=form == "text-per-line")
    single = tmp_path / "single"
    midmix.prepare("one", [src], out=single, **kw)
    parts = [tmp_path / f"part{i}" for i in range(4)]
    for i, part in enumerate(parts):
        m = midmix.prepare("one", [src], out=part, num_tasks=4, task_index=i, **kw)
        assert m.counts.documents > 0, f"task {i} got nothing"
    merged = tmp_path / "merged"
    midmix.merge(parts, merged, register=False)
    a, b = tree_bytes(single), tree_bytes(merged)
    ra, rb = json.loads(a.pop("midmix.json")), json.loads(b.pop("midmix.json"))
    assert a == b
    assert ra["counts"] == rb["counts"] and ra["inputs"] == rb["inputs"]
    if form == "jsonl":  # a bad line in the last task's portion is named by its line in the whole file
        lines = src.read_text().splitlines(keepends=True)
        lines[-3] = "{not json\n"
        src.write_text("".join(lines))
        with pytest.raises(midmix.InputError, match=rf"one.jsonl:{len(lines) - 2} \(line {len(lines) - 2}\)"):
            midmix.prepare("one", [src], out=tmp_path / "bad", num_tasks=4, task_index=3, **kw)
