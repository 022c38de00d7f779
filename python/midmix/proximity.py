"""Token-unigram statistics and the study's proximity metrics (its Appendix D), exact and
mixture-aware.

`UnigramStats` holds a count per token id. `proximity(a, b)` returns every metric between two
distributions; `proximity_advantage(mid, target, base)` is PA(M→T) = prox(M, T) − prox(base, T) on
the combined score. A mixture is the exact weighted sum of normalized distributions
(`base.mix(candidate, 0.12)`), not a resampling of documents.

Metrics (the paper's script, `dataset_similarity_syntactic.py`, method `token`):
  vocab_jaccard      |V1∩V2| / |V1∪V2| over ids with non-zero count
  overlap_ratio      |V1∩V2| / min(|V1|, |V2|)           (reported by the paper, not in its score)
  cosine             cosine of the two probability vectors
  jsd                Jensen–Shannon divergence in nats, as the script computes it:
                     M=(p+q)/2, KL(p‖M)=Σ p·ln(p/(M+1e-10)+1e-10), JSD=(KL(p‖M)+KL(q‖M))/2
  js_similarity      1/(1+JSD)
  combined           0.4·cosine + 0.3·vocab_jaccard + 0.3·js_similarity
midmix's additions:
  kl_smoothed        KL(a‖b) in nats with add-k smoothing (k=1 by default) over the whole vocabulary
  jsd_normalized     1 − JSD/ln 2 (in [0, 1])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midmix import api
from midmix.errors import ConfigError
from midmix.manifest import MixManifest, PreparedManifest, read_manifest
from midmix.tokenizer import Tokenizer

EPS = 1e-10


@dataclass
class UnigramStats:
    """Counts of each token id of one source (or the exact distribution of a mixture)."""

    name: str
    # uint64 counts of a counted source; for a mixture, float64 pseudo-counts (its distribution
    # times its token-weighted size), so every metric reads mixtures and sources the same way.
    counts: np.ndarray
    documents: int = 0
    tokens: int = 0
    tokenizer_sha256: str | None = None
    meta: dict = field(default_factory=dict)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, path: str | Path, name: str | None = None, threads: int | None = None) -> UnigramStats:
        """From a prepared or mixed MDS dataset (no re-tokenizing). The EOS/BOS that `prepare`
        inserted are not counted, so the stats match those of the raw documents — unless the
        documents' own text holds those ids too: then they are all counted (`meta["kept_ids"]`
        says so), since leaving them out would drop real tokens."""
        path = Path(path)
        manifest = read_manifest(path)
        exclude, kept = _inserted_ids(manifest)
        counts, docs, tokens, _ = api.count_unigrams_dataset(path, exclude=exclude, threads=threads)
        tok = manifest.tokenizer if manifest else None
        if tok and tok.vocab_size:
            counts = _fit(counts, tok.vocab_size)
        return cls(
            name or path.name,
            counts,
            docs,
            tokens,
            tok.sha256 if tok else None,
            {"source": str(path), "kind": "dataset", "excluded_ids": exclude, "kept_ids": kept},
        )

    @classmethod
    def from_files(
        cls,
        inputs: list[str | Path],
        tokenizer: str | Path,
        name: str | None = None,
        *,
        fields: list[str] | None = None,
        max_docs: int | None = None,
        max_tokens_per_doc: int | None = None,
        seed: int = 0,
        threads: int | None = None,
    ) -> UnigramStats:
        """From raw files, tokenized exactly as `prepare` does (no special tokens added). Every
        field listed is counted (default `text`; e.g. `prompt,response` for SFT files)."""
        fields = fields or ["text"]
        counts, docs, tokens, skipped = api.count_unigrams_files(
            inputs,
            tokenizer,
            fields=fields,
            max_docs=max_docs,
            max_tokens_per_doc=max_tokens_per_doc,
            seed=seed,
            threads=threads,
        )
        tok = Tokenizer(tokenizer)
        return cls(
            name or Path(str(inputs[0])).stem,
            _fit(counts, tok.vocab_size),
            docs,
            tokens,
            tok.sha256,
            {
                "source": [str(i) for i in inputs],
                "kind": "raw",
                "fields": fields,
                "max_docs": max_docs,
                "max_tokens_per_doc": max_tokens_per_doc,
                "seed": seed,
                "skipped": skipped,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> UnigramStats:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(
                    meta.pop("name"),
                    z["counts"],
                    meta.pop("documents"),
                    meta.pop("tokens"),
                    meta.pop("tokenizer_sha256"),
                    meta,
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{path}: not unigram statistics saved by `midmix stats --out` ({e!r})") from e

    def save(self, path: str | Path) -> None:
        meta = {
            "name": self.name,
            "documents": self.documents,
            "tokens": self.tokens,
            "tokenizer_sha256": self.tokenizer_sha256,
            **self.meta,
        }
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, counts=self.counts, meta=np.array(json.dumps(meta)))
        tmp.replace(path)

    # -- distributions ------------------------------------------------------------------------
    @property
    def probs(self) -> np.ndarray:
        total = float(np.sum(self.counts))
        return np.asarray(self.counts, dtype=np.float64) / total if total > 0 else np.zeros(len(self.counts))

    @property
    def support(self) -> np.ndarray:
        return np.asarray(self.counts) > 0

    def mix(self, other: UnigramStats, weight: float) -> UnigramStats:
        """The exact token-weighted mixture (1−weight)·self + weight·other of normalized distributions."""
        if not 0 <= weight <= 1:
            raise ConfigError(f"mixture weight {weight} must be in [0, 1]")
        _check_same_tokenizer(self, other)
        n = max(len(self.counts), len(other.counts))
        p = (1 - weight) * _fit(self.probs, n) + weight * _fit(other.probs, n)
        tokens = int(round((1 - weight) * self.tokens + weight * other.tokens))
        return UnigramStats(
            f"{other.name}={weight:g}+{self.name}",
            p * tokens,
            0,
            tokens,
            self.tokenizer_sha256,
            {"kind": "mixture", "base": self.name, "candidate": other.name, "weight": weight},
        )

    def entropy(self) -> float:
        """Shannon entropy of the unigram distribution, in nats."""
        p = self.probs[self.probs > 0]
        return float(-(p * np.log(p)).sum())

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        p = self.probs
        order = np.argsort(-p, kind="stable")[:k]
        return [(int(i), float(p[i])) for i in order if p[i] > 0]


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    if len(a) >= n:
        return a[:n] if not np.any(np.asarray(a)[n:]) else a
    return np.concatenate([a, np.zeros(n - len(a), dtype=a.dtype)])


def _inserted_ids(manifest: PreparedManifest | MixManifest | None) -> tuple[list[int], list[int]]:
    """(ids to leave out, ids kept): the EOS/BOS ids `prepare` inserted, from the dataset's manifest or
    its sources' for a mix. Where a source's documents hold those ids in their own text, the tokens
    cannot be told apart from the inserted ones (no document boundaries are recorded), so the ids are
    kept rather than real tokens dropped. Sources from before midmix counted that (None) are left out
    as they always were."""
    if manifest is None:
        return [], []
    sources: list[PreparedManifest | MixManifest | None] = [manifest]
    if isinstance(manifest, MixManifest):
        sources = [read_manifest(Path(s.path)) for s in manifest.source_info]
    prepared = [m for m in sources if isinstance(m, PreparedManifest)]
    ids = sorted({i for m in prepared for i in (m.eos_id, m.bos_id) if i is not None})
    if any(m.counts.special_in_text for m in prepared):
        return [], ids
    return ids, []


def _check_same_tokenizer(a: UnigramStats, b: UnigramStats) -> None:
    if a.tokenizer_sha256 and b.tokenizer_sha256 and a.tokenizer_sha256 != b.tokenizer_sha256:
        raise ConfigError(f"'{a.name}' and '{b.name}' were counted with different tokenizers")


def proximity(a: UnigramStats, b: UnigramStats, smoothing: float = 1.0) -> dict[str, float]:
    """Every metric between two unigram distributions (see the module docstring)."""
    _check_same_tokenizer(a, b)
    n = max(len(a.counts), len(b.counts))
    p, q = _fit(a.probs, n), _fit(b.probs, n)
    sa, sb = _fit(a.support, n), _fit(b.support, n)
    inter, union = int(np.sum(sa & sb)), int(np.sum(sa | sb))
    jaccard = inter / union if union else 0.0
    overlap = inter / min(int(sa.sum()), int(sb.sum())) if min(sa.sum(), sb.sum()) else 0.0
    norm = float(np.linalg.norm(p) * np.linalg.norm(q))
    cosine = float(np.dot(p, q) / norm) if norm else 0.0
    # Over the union vocabulary, exactly as the paper's script (its epsilons included).
    u = sa | sb
    pu, qu = p[u], q[u]
    m = (pu + qu) / 2
    kl1 = float(np.sum(pu * np.log(pu / (m + EPS) + EPS)))
    kl2 = float(np.sum(qu * np.log(qu / (m + EPS) + EPS)))
    jsd = (kl1 + kl2) / 2
    js_sim = 1 / (1 + jsd)
    ca = _fit(np.asarray(a.counts, dtype=np.float64), n)
    cb = _fit(np.asarray(b.counts, dtype=np.float64), n)
    ps = (ca + smoothing) / (ca.sum() + smoothing * n)
    qs = (cb + smoothing) / (cb.sum() + smoothing * n)
    kl = float(np.sum(ps * np.log(ps / qs)))
    return {
        "vocab_jaccard": jaccard,
        "overlap_ratio": overlap,
        "cosine": cosine,
        "jsd": jsd,
        "js_similarity": js_sim,
        "combined": 0.4 * cosine + 0.3 * jaccard + 0.3 * js_sim,
        "kl_smoothed": kl,
        "jsd_normalized": 1 - jsd / math.log(2),
    }


def proximity_advantage(mid: UnigramStats, target: UnigramStats, base: UnigramStats) -> float:
    """PA(M→T) = combined(M, T) − combined(base, T)."""
    return proximity(mid, target)["combined"] - proximity(base, target)["combined"]
