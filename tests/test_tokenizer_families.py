"""Token ids equal the Python `tokenizers` library's for every tokenizer family midmix may be given, not only
the fixtures' (Pythia and GPT-2 byte-level BPE): each family is trained here, small, with `tokenizers` itself,
in the configuration its best-known models ship (Llama 3's regex sequence, Llama 2's SentencePiece BPE with
byte fallback, a T5-style Unigram, BERT's WordPiece), and given added tokens of every kind HF treats specially
(lstrip/rstrip/single_word, normalized or not, ids that skip or collide with the vocabulary)."""

from __future__ import annotations

import json
from pathlib import Path

import midmix
import numpy as np
import pytest
from adversarial import adversarial_texts
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

GPT4_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PROSE = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n",
    "Solve 12 + 35 = 47; then 47 * 2 = 94. Hence the answer is 94.",
    "Midtraining mixes code and math into general text at the right time and weight.",
    "It's what we'll see: they're sure you've met I'm here, he'd go.",
]


def _corpus() -> list[str]:
    return PROSE * 20 + [t for t in adversarial_texts() if len(t) < 20_000]


def _byte_level_regex() -> Tokenizer:
    """Llama 3 / GPT-4 style: a regex Split, then byte-level without its own regex."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=1200,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        ),
    )
    return tok


def _sentencepiece_bpe() -> Tokenizer:
    """Llama 2 / Mistral style: "▁" for spaces in the normalizer, BPE with byte fallback, no pre-tokenizer."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(vocab_size=1200, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], limit_alphabet=100),
    )
    return tok


def _unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        _corpus(),
        trainers.UnigramTrainer(vocab_size=3000, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"),
    )
    return tok


def _wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        _corpus(),
        trainers.WordPieceTrainer(vocab_size=3000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
    )
    return tok


FAMILIES = {
    "byte-level-regex": _byte_level_regex,
    "sentencepiece-bpe": _sentencepiece_bpe,
    "unigram": _unigram,
    "wordpiece": _wordpiece,
}


def _added(
    id_: int,
    content: str,
    *,
    special: bool = False,
    normalized: bool | None = None,
    lstrip: bool = False,
    rstrip: bool = False,
    single_word: bool = False,
) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": single_word,
        "lstrip": lstrip,
        "rstrip": rstrip,
        "normalized": (not special) if normalized is None else normalized,
        "special": special,
    }


def _with_added(spec: dict, extra: list[dict]) -> dict:
    spec = json.loads(json.dumps(spec))
    spec["added_tokens"] += extra
    return spec


def _variants(spec: dict) -> dict[str, dict]:
    """The family's tokenizer.json as trained, and with added tokens HF treats specially."""
    vocab = len(spec["model"]["vocab"])
    some_entry = "the" if spec["model"]["type"] != "Unigram" else spec["model"]["vocab"][-1][0]
    return {
        "plain": spec,
        # ids that skip (HF numbers them after the vocabulary, in the order listed) or fall inside it
        "skipping-ids": _with_added(
            spec,
            [
                _added(vocab + 40, "<|skip|>", special=True),
                _added(vocab + 20, "<|skip2|>"),
                _added(7, "<|inside|>", special=True),
            ],
        ),
        # a token that is also a vocabulary entry gets the entry's id
        "entry": _with_added(spec, [_added(vocab, some_entry, special=True)]),
        "strip-and-word": _with_added(
            spec,
            [
                _added(vocab, "<mask>", special=True, lstrip=True),
                _added(vocab + 1, "[R]", rstrip=True),
                _added(vocab + 2, "word", single_word=True),
                _added(vocab + 3, "  ", normalized=True),
            ],
        ),
    }


TEXTS = [
    "a <|skip|> b<|skip2|>c <|inside|> d",
    "the theme <mask> x  <mask>y",
    "[R]   z [R]",
    "a word words sword word.",
    "  two  spaces   three",
    "<|begin_of_text|>hi<|end_of_text|>",
    "<s>x</s><unk> [CLS] a [SEP] [MASK]",
    "unknown ☃ emoji 😀 and é",
    "",
]


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    paths = {}
    for family, train in FAMILIES.items():
        spec = json.loads(train().to_str())
        for variant, v in _variants(spec).items():
            p = root / f"{family}-{variant}.json"
            p.write_text(json.dumps(v))
            paths[f"{family}-{variant}"] = p
    return paths


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_and_added_token_kind_gives_hf_ids(families: dict[str, Path], family: str) -> None:
    texts = TEXTS + adversarial_texts()
    wrong = []
    for name, path in families.items():
        if not name.startswith(family):
            continue
        oracle = Tokenizer.from_file(str(path))
        want = [e.ids for e in oracle.encode_batch(texts, add_special_tokens=False)]
        for encoder in ("auto", "hf"):
            ours = midmix.Tokenizer(path, encoder=encoder)
            got = ours.encode_batch(texts)
            bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
            if bad:
                wrong.append(
                    f"{name} ({encoder}, {ours.backend}): {len(bad)} texts differ, "
                    f"first {texts[bad[0]][:40]!r}: {got[bad[0]][:12]} vs HF {want[bad[0]][:12]}"
                )
            top = max(max(w, default=0) for w in want)
            if ours.vocab_size <= top or ours.vocab_size != max(oracle.get_vocab(True).values()) + 1:
                wrong.append(
                    f"{name} ({encoder}): vocab_size {ours.vocab_size}, HF's largest id "
                    f"{max(oracle.get_vocab(True).values())}"
                )
            for content in ("<|skip|>", "<|inside|>", "<mask>", "the"):
                if ours.token_to_id(content) != oracle.token_to_id(content):
                    wrong.append(
                        f"{name} ({encoder}): token_to_id({content!r}) = {ours.token_to_id(content)}, "
                        f"HF {oracle.token_to_id(content)}"
                    )
            sample = want[0] + want[len(TEXTS) - 2]
            if ours.decode(sample) != oracle.decode(sample, skip_special_tokens=False):
                wrong.append(f"{name} ({encoder}): decode differs")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prepared_stream_of_each_family_equals_hf(families: dict[str, Path], family: str, tmp_path: Path) -> None:
    """End to end: prepare with the family's tokenizer (its added tokens as EOS where it has one), read back."""
    path = families[f"{family}-skipping-ids"]
    docs = [t for t in TEXTS + PROSE if t]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    midmix.prepare(
        "f",
        [tmp_path / "in.jsonl"],
        tokenizer=path,
        seq_len=8,
        data_root=tmp_path / "data",
        eos="<|skip|>",
        register=False,
    )
    reader = midmix.Dataset.open(tmp_path / "data" / "f").tokens()
    tokens, _ = reader.read_strided(0, 1, reader.num_samples)
    oracle = Tokenizer.from_file(str(path))
    eos = oracle.token_to_id("<|skip|>")
    want = np.concatenate([np.array(e.ids + [eos]) for e in oracle.encode_batch(docs, add_special_tokens=False)])
    got = tokens.reshape(-1)
    n = min(len(got), len(want))
    assert len(got) >= len(want) - 8 and np.array_equal(got[:n], want[:n])


def test_the_rust_hf_crate_is_the_python_packages_version() -> None:
    """midmix's HF encoder is the `tokenizers` crate; the oracle is the Python package transformers pins.
    Versions break Unigram ties differently (0.23 vs 0.22 on a run of newlines), so they must agree."""
    import tokenizers

    lock = (Path(__file__).parents[1] / "Cargo.lock").read_text()
    crate = lock.split('name = "tokenizers"\nversion = "', 1)[1].split('"', 1)[0]
    assert crate.split(".")[:2] == tokenizers.__version__.split(".")[:2], (crate, tokenizers.__version__)


def test_an_encoder_that_panics_is_an_error_naming_the_record(tmp_path: Path) -> None:
    """tokenizers 0.22 panics on a `Strip` normalizer with normalized added tokens and non-ASCII text (the
    Python package too): midmix turns that into an error naming the tokenizer, and in `prepare` the file and
    line of the record."""
    spec = json.loads((Path(__file__).parent / "fixtures" / "pythia.json").read_text())
    spec["normalizer"] = {"type": "Strip", "strip_left": True, "strip_right": True}
    path = tmp_path / "strip.json"
    path.write_text(json.dumps(spec))
    tok = midmix.Tokenizer(path)
    assert (
        tok.encode("plain ascii") == Tokenizer.from_file(str(path)).encode("plain ascii", add_special_tokens=False).ids
    )
    with pytest.raises(midmix.TokenizerError, match="panicked"):
        tok.encode("café")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["ok", "also ok", "café"]))
    with pytest.raises(midmix.MidmixError, match=r"in.jsonl:3 \(line 3\): cannot be tokenized"):
        midmix.prepare("s", [tmp_path / "in.jsonl"], tokenizer=path, seq_len=8, out=tmp_path / "out", register=False)
