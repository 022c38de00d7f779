"""The options objects (`midmix.options`): the functions take one whole or its fields as keywords, and a value
of the wrong type, a field given twice over or an option that does not exist is a ConfigError naming it —
before any work, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import midmix
import pytest
from midmix import ConfigError, OutputOptions, Phase, PrepareOptions

ROOT = Path(__file__).resolve().parent.parent
TOK = ROOT / "tests" / "fixtures" / "pythia.json"
PROSE = ROOT / "demo" / "data" / "prose.jsonl"


def _prepare(tmp: Path, name: str = "prose", **kw: object) -> Path:
    midmix.prepare(name, [str(PROSE)], tokenizer=TOK, seq_len=128, data_root=tmp, **kw)
    return tmp / name


def test_an_options_object_is_the_same_call_as_its_keywords(tmp_path: Path) -> None:
    by_keywords = midmix.prepare("a", [str(PROSE)], tokenizer=TOK, seq_len=128, out=tmp_path / "a", register=False)
    whole = PrepareOptions(
        name="a", inputs=[str(PROSE)], tokenizer=TOK.absolute(), seq_len=128, output=OutputOptions(out=tmp_path / "b")
    )
    by_object = midmix.prepare(whole, register=False)
    assert by_object.fingerprint == by_keywords.fingerprint
    assert (tmp_path / "a" / "shard.00000.mds").read_bytes() == (tmp_path / "b" / "shard.00000.mds").read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overwrite": "no"}, "PrepareOptions.output.overwrite: expected bool, got 'no'"),
        ({"seq_len": True}, "PrepareOptions.seq_len: expected int, got True"),
        ({"threads": 2.5}, "PrepareOptions.output.threads: expected int | None, got 2.5"),
        ({"hashes": "sha1"}, "PrepareOptions.hashes: expected list[str], got 'sha1'"),
        ({"mask_prompt": None}, "PrepareOptions.mask_prompt: expected bool, got None"),
        ({"seq_len": -1}, "seq_len: "),  # the core's range, naming the field
        ({"threads": 2**70}, "output.threads: "),
        ({"seqlen": 128}, "unknown option seqlen"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_field(tmp_path: Path, options: dict, message: str) -> None:
    kw = {"seq_len": 128, **options}
    with pytest.raises(ConfigError, match=None) as e:
        midmix.prepare("p", [str(PROSE)], tokenizer=TOK, out=tmp_path / "p", register=False, **kw)
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "p").exists()


def test_one_path_where_a_list_belongs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inputs: give a list of paths, not one path"):
        midmix.prepare("p", str(PROSE), tokenizer=TOK, out=tmp_path / "p", register=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="parts: give a list of paths"):
        midmix.merge(str(tmp_path / "part"), tmp_path / "m")  # type: ignore[arg-type]


def test_an_object_and_keywords_together_are_refused(tmp_path: Path) -> None:
    whole = PrepareOptions(
        name="a", inputs=[str(PROSE)], tokenizer=TOK, seq_len=128, output=OutputOptions(out=tmp_path / "a")
    )
    with pytest.raises(ConfigError, match="give a PrepareOptions or its fields as arguments, not both .*seq_len"):
        midmix.prepare(whole, seq_len=64, register=False)


def test_mix_options_refuse_a_source_named_twice_and_zero_passes(tmp_path: Path) -> None:
    prose = _prepare(tmp_path)
    twice = midmix.MixOptions(
        sources=[("prose", prose), ("prose", prose)],
        phases=[Phase.samples(8, {"prose": 1.0})],
        output=OutputOptions(out=tmp_path / "mix"),
    )
    with pytest.raises(ConfigError, match="source 'prose' is given twice"):
        midmix.build_mix(twice, register=False)
    with pytest.raises(ConfigError, match="--max-repeat must be at least 1"):
        midmix.build_mix(
            [Phase.samples(8, {"prose": 1.0})],
            tmp_path / "mix",
            data_root=tmp_path,
            on_exhaust="repeat",
            max_repeat=0,
            register=False,
        )
    assert not (tmp_path / "mix").exists()


def test_overwrite_replaces_only_what_midmix_wrote(tmp_path: Path) -> None:
    out = _prepare(tmp_path)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(midmix.DatasetError, match="holds 'notes.txt', which midmix does not write"):
        _prepare(tmp_path, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    _prepare(tmp_path, overwrite=True)
    # A directory that only looks like one (a manifest and an index beside the user's files) is left alone.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "midmix.json").write_text(json.dumps({"kind": "prepared"}))
    (fake / "index.json").write_text("{}")
    (fake / "thesis.tex").write_text("precious")
    with pytest.raises(midmix.DatasetError, match="thesis.tex"):
        midmix.prepare("fake", [str(PROSE)], tokenizer=TOK, seq_len=128, out=fake, overwrite=True, register=False)
    assert (fake / "thesis.tex").read_text() == "precious"


def test_a_global_batch_in_tokens_is_the_same_mix_as_in_samples(tmp_path: Path) -> None:
    _prepare(tmp_path)  # seq_len 128
    phases = [Phase.samples(32, {"prose": 1.0})]
    in_samples = midmix.build_mix(phases, tmp_path / "s", data_root=tmp_path, global_batch=4, register=False)
    in_tokens = midmix.build_mix(phases, tmp_path / "t", data_root=tmp_path, global_batch_tokens=512, register=False)
    assert in_tokens.global_batch == 4 and in_tokens.fingerprint == in_samples.fingerprint
    assert (tmp_path / "t" / "mix.sample.u32").read_bytes() == (tmp_path / "s" / "mix.sample.u32").read_bytes()
    with pytest.raises(ConfigError, match="--global-batch-tokens 500 is not a multiple of seq_len 128"):
        midmix.build_mix(phases, tmp_path / "u", data_root=tmp_path, global_batch_tokens=500, register=False)
    with pytest.raises(ConfigError, match="give --global-batch or --global-batch-tokens, not both"):
        midmix.build_mix(
            phases, tmp_path / "u", data_root=tmp_path, global_batch=4, global_batch_tokens=512, register=False
        )
    assert not (tmp_path / "u").exists()
