"""Every input format gives the same tokens; every bad input gives an error naming the file and
line/row (or a counted skip when asked), and leaves nothing behind."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import midmix
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
import xxhash
import zstandard
from conftest import PYTHIA, report, token_stream
from midmix import ConfigError, DatasetError, InputError, TokenizerError

DOCS = [
    "The first document.\nIt has two lines.",
    "Second: ünïcödé, 日本語, emoji 👍🏽.",
    "def third():\r\n    return 3\r\n",
    "fourth " * 50,
]


def expected_stream(docs: list[str]) -> list[int]:
    t = tokenizers.Tokenizer.from_file(str(PYTHIA))
    return [i for d in docs for i in (*t.encode(d, add_special_tokens=False).ids, 0)]


def run(tmp_path: Path, inputs: list[Path | str], **kw) -> Path:
    out = tmp_path / kw.pop("out_name", "out")
    midmix.prepare(
        "t",
        [str(i) for i in inputs],
        tokenizer=PYTHIA,
        seq_len=kw.pop("seq_len", 8),
        out=out,
        num_tasks=1,
        task_index=0,
        **kw,
    )
    return out


def jsonl(docs: list[str], field: str = "text") -> bytes:
    return "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()


def write_parquet(path: Path, docs: list[str], field: str = "text") -> None:
    pq.write_table(pa.table({"id": list(range(len(docs))), field: docs}), path, row_group_size=2)


@pytest.mark.parametrize("kind", ["jsonl", "json", "jsonl.gz", "jsonl.zst", "parquet", "txt", "txt-lines"])
def test_formats_give_hf_tokens(tmp_path, kind) -> None:
    d = tmp_path / "in"
    d.mkdir()
    docs = DOCS
    kw = {}
    if kind in ("jsonl", "json"):
        (d / f"a.{kind}").write_bytes(jsonl(DOCS))
    elif kind == "jsonl.gz":
        (d / "a.jsonl.gz").write_bytes(gzip.compress(jsonl(DOCS)))
    elif kind == "jsonl.zst":
        (d / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(DOCS)))
    elif kind == "parquet":
        write_parquet(d / "a.parquet", DOCS)
    elif kind == "txt":
        for i, doc in enumerate(DOCS):
            (d / f"{i}.txt").write_text(doc, newline="")
    else:
        (d / "a.txt").write_text("line one\nline two\r\n\nline four\n")
        docs = ["line one", "line two", "line four"]
        kw["text_per_line"] = True
    out = run(tmp_path, [d], **kw)
    assert token_stream(out).tolist() == expected_stream(docs)
    # Each input is read once: the fingerprint is hashed while parsing (Parquet: read again), and
    # must be the xxh3-128 of the file's bytes.
    inputs = report(out)["inputs"]
    assert len(inputs) == len(list(d.iterdir()))
    for i in inputs:
        assert i["xxh3_128"] == xxhash.xxh3_128_hexdigest((d / Path(i["path"]).name).read_bytes()), i
    if kind == "txt-lines":
        assert report(out)["counts"]["skipped"] == {"empty_document": 1}


def test_text_field_globs_and_order(tmp_path) -> None:
    (tmp_path / "b.jsonl").write_bytes(jsonl(DOCS[2:], field="body"))
    (tmp_path / "a.jsonl").write_bytes(jsonl(DOCS[:2], field="body"))
    out = run(tmp_path, [tmp_path / "*.jsonl"], text_field="body")
    assert token_stream(out).tolist() == expected_stream(DOCS)  # glob matches sorted: a then b
    rep = report(out)
    assert [Path(i["path"]).name for i in rep["inputs"]] == ["a.jsonl", "b.jsonl"]
    assert [i["documents"] for i in rep["inputs"]] == [2, 2]


def test_packing_and_dropped_tail(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_bytes(jsonl(DOCS))
    out = tmp_path / "out"
    rep = midmix.prepare("t", [str(tmp_path / "a.jsonl")], tokenizer=PYTHIA, seq_len=16, out=out).to_dict()
    total = len(expected_stream(DOCS))
    c = rep["counts"]
    assert c["samples"] == total // 16 and c["tokens"] == 16 * (total // 16)
    assert c["dropped_tail_tokens"] == total % 16 and c["document_tokens"] == total
    assert rep["columns"] == {"tokens": "ndarray:uint16:16"}


BAD_CASES = {
    "malformed_json": (b'{"text": "ok"}\n{"text": "broken\n', "a.jsonl", 2, "invalid_json"),
    "invalid_utf8": (b'{"text": "ok"}\n{"text": "bad \xff byte"}\n', "a.jsonl", 2, "invalid_utf8"),
    "missing_field": (b'{"text": "ok"}\n{"text": "ok"}\n{"body": "x"}\n', "a.jsonl", 3, "missing_field"),
    "non_string": (b'{"text": "ok"}\n{"text": 42}\n', "a.jsonl", 2, "non_string_field"),
    "not_object": (b'{"text": "ok"}\n["text"]\n', "a.jsonl", 2, "not_an_object"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_records_name_file_and_line(tmp_path, case) -> None:
    data, name, line, reason = BAD_CASES[case]
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=out)
    assert err.value.path == str(src) and err.value.line == line
    assert f"{src}:{line}" in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]  # nothing left behind

    rep = midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=out, on_bad_record="skip").to_dict()
    assert rep["counts"]["skipped"] == {reason: 1}
    assert rep["counts"]["documents"] == line - 1


def test_bad_parquet_value_names_row(tmp_path) -> None:
    src = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["ok", None, "ok"]}), src)
    with pytest.raises(InputError) as err:
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out")
    assert err.value.row == 1 and "row 1" in str(err.value)
    pq.write_table(pa.table({"text": [1, 2]}), src)
    with pytest.raises(InputError, match="not a string"):
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out")
    pq.write_table(pa.table({"body": ["x"]}), src)
    with pytest.raises(InputError, match="no column 'text'.*body"):
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


@pytest.mark.parametrize("kind", ["gz", "zst", "parquet"])
def test_truncated_files_are_errors(tmp_path, kind) -> None:
    body = jsonl(DOCS * 200)
    if kind == "gz":
        src, data = tmp_path / "a.jsonl.gz", gzip.compress(body)
    elif kind == "zst":
        src, data = tmp_path / "a.jsonl.zst", zstandard.ZstdCompressor().compress(body)
    else:
        full = tmp_path / "full.parquet"
        write_parquet(full, DOCS * 200)
        src, data = tmp_path / "a.parquet", full.read_bytes()
        full.unlink()
    src.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as err:
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out")
    assert err.value.path == str(src)
    assert "truncated" in str(err.value) or "Parquet" in str(err.value)
    # Not skippable: a broken file is not a bad record.
    with pytest.raises(InputError):
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out", on_bad_record="skip")
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_bad_tokenizer_and_options(tmp_path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(jsonl(DOCS))
    bad_tok = tmp_path / "tok.json"
    bad_tok.write_text("{not json")
    with pytest.raises(TokenizerError, match=str(bad_tok)):
        midmix.prepare("t", [str(src)], tokenizer=bad_tok, seq_len=4, out=tmp_path / "out")
    with pytest.raises(ConfigError, match="missing.json: no such tokenizer file"):
        midmix.prepare("t", [str(src)], tokenizer=tmp_path / "missing.json", seq_len=4, out=tmp_path / "out")
    with pytest.raises(ConfigError, match="no such file"):
        midmix.prepare("t", [str(tmp_path / "nope.jsonl")], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown input format"):
        (tmp_path / "x.csv").write_text("a")
        midmix.prepare("t", [str(tmp_path / "x.csv")], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out")
    with pytest.raises(ConfigError, match="neither a token"):
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out", eos="<nope>")
    with pytest.raises(ConfigError, match="not supported"):
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=tmp_path / "out", compression="br")
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_without_flag(tmp_path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(jsonl(DOCS))
    out = tmp_path / "out"
    midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=4, out=out)
    with pytest.raises(DatasetError, match="already exists"):
        midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=8, out=out)
    assert report(out)["seq_len"] == 4
    midmix.prepare("t", [str(src)], tokenizer=PYTHIA, seq_len=8, out=out, overwrite=True)
    assert report(out)["seq_len"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "out"]


def test_empty_documents_are_counted_and_eos_bos_options(tmp_path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(jsonl(["", DOCS[0], ""]) + b"\n")
    out = run(tmp_path, [src], eos="none", bos="<|padding|>")
    rep = report(out)
    assert rep["counts"]["skipped"] == {"empty_document": 2, "blank_line": 1}
    ids = tokenizers.Tokenizer.from_file(str(PYTHIA)).encode(DOCS[0], add_special_tokens=False).ids
    assert token_stream(out).tolist() == [1, *ids]
    assert rep["eos_id"] is None and rep["bos_id"] == 1
