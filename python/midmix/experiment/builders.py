"""How each output of a grid is built: prepared data, mixes, training runs, unigram statistics, tables.

These are the builds the job kinds name (`kinds.py`); the cache around each is `jobs.run_job`'s, so a
build here always writes its output afresh. A killed training run resumes from its checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

from midmix import api
from midmix.errors import ConfigError
from midmix.experiment import tables
from midmix.experiment.grid import Grid, Variant, all_variants, max_passes, mix_phases, samples_needed
from midmix.experiment.layout import Layout
from midmix.mixspec import source_order
from midmix.options import MixOptions, OnExhaust, OutputOptions
from midmix.registry import Dataset


def mix_options(lay: Layout, v: Variant | None) -> MixOptions:
    """The one `build_mix` call a mix job makes: also its cache key (`kinds`), so the two cannot drift."""
    g = lay.g
    phases = mix_phases(g, v)
    return MixOptions(
        sources=[(name, lay.data / name) for name in source_order(phases)],
        phases=phases,
        output=OutputOptions(out=lay.mix_dir(v), overwrite=True),
        seed=g.seed,
        global_batch=g.global_batch,
        on_exhaust=cast(OnExhaust, g.on_exhaust),  # one of them: the grid is checked when read
        max_repeat=g.max_repeat,
    )


class Builder(Layout):
    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self._checked = False
        self.progress = ""  # where a stage is ("3/12 (ETA 4 min)"), shown in the training runs' log lines

    # -- 1. data -----------------------------------------------------------------------------------
    def prepare_one(self, dir_name: str) -> None:
        spec = self.prepare_specs()[dir_name]  # its input exists: the job's facts hashed it
        m = api.prepare(
            spec.name,
            [spec.src],
            tokenizer=self.g.path(self.g.tokenizer),
            seq_len=spec.seq_len,
            out=self.data / dir_name,
            mode=spec.mode,
            overwrite=True,
            register=False,
            on_bad_record=spec.on_bad_record,
            **spec.fields,
        )
        c = m.counts
        skipped = sum(c.skipped.values())
        self.log(
            f"prepared {spec.name}: {c.documents:,} documents → {c.samples:,} samples of ≤{spec.seq_len} tokens"
            + (f" ({skipped} skipped: {c.skipped})" if skipped else "")
        )

    # -- 2. mixes ----------------------------------------------------------------------------------
    def source_needs(self) -> Iterator[tuple[str, str, float, int]]:
        """(mix, source, samples the mix needs of it, samples the prepared source has) for every mix."""
        size = {name: Dataset.open(self.data / name).num_samples for name in ["base", *self.g.mixes]}
        for v in [None, *all_variants(self.g)]:
            for source, need in samples_needed(mix_phases(self.g, v)).items():
                yield self.mix_dir(v).name, source, need, size[source]

    def check_data(self) -> None:
        """Refuse, before any mix is built or model trained, a grid that asks any source for more than it has
        (passes beyond max_repeat), an SFT target for more examples than it has, or more general held-out
        samples than exist: one error listing every shortfall."""
        g = self.g
        allowed = max_passes(g)
        short = []
        for mix, source, need, have in self.source_needs():
            if need > allowed * have:
                short.append(
                    f"mix {mix}: needs {need:,.0f} samples of {source!r} ({need / have:.2f} passes), which has {have:,}"
                )
        for name, t in g.sft.targets.items():
            have = Dataset.open(self.data / f"sft-{name}").num_samples
            if t.train_examples + t.val_examples > have:
                short.append(
                    f"sft.targets.{name}: train_examples {t.train_examples} + val_examples "
                    f"{t.val_examples} > its {have:,} examples (after skipped ones)"
                )
        for name in ["general_val"] + (["general_val-docs"] if g.sft.general_loss == "documents" else []):
            val = Dataset.open(self.data / name).num_samples
            if g.eval_samples > val:
                short.append(f"eval_samples: {g.eval_samples} > the {val:,} samples of {name}")
        if short:
            limit = "on_exhaust: error (one pass)" if g.max_repeat is None else f"max_repeat: {g.max_repeat}"
            raise ConfigError(
                f"grid {g.name}: the data cannot give what the grid asks under {limit}:\n  "
                + "\n  ".join(short)
                + "\nresize the grid (steps, weights, examples) or allow "
                "repetition (on_exhaust: repeat, max_repeat: N)"
            )

    def build_mix(self, v: Variant | None) -> None:
        if not self._checked:  # every mix job checks the whole grid's data first: one error lists it all
            self.check_data()
            self._checked = True
        opts = mix_options(self, v)
        m = api.build_mix(opts, register=False)
        out = opts.output.out
        repeated = {k: p for k, p in m.passes.items() if p > 1}
        self.log(
            f"built mix {out.name}"
            + (f" (passes: {', '.join(f'{k} {p:.2f}' for k, p in repeated.items())})" if repeated else "")
        )

    # -- 3–5. training -----------------------------------------------------------------------------
    def train(self, recipe: dict[str, Any], label: str) -> dict[str, Any]:
        from midmix.train.config import from_dict
        from midmix.train.run import completed, train

        cfg = from_dict(recipe)
        done = completed(cfg, recipe)
        if done is not None:
            return done
        t = time.perf_counter()
        summary = train(cfg, recipe)
        final = summary.get("final", {})
        shown = ", ".join(f"{k.split('/')[0]} {final[k]:.3f}" for k in ("domain/loss", "forgetting/loss") if k in final)
        where = f" [{self.progress}]" if self.progress else ""
        self.log(f"{label}{where}: {summary['steps']} steps in {time.perf_counter() - t:.1f}s ({shown})")
        return summary

    # -- 6. proximity and tables ---------------------------------------------------------------------
    def unigram(self, name: str) -> None:
        from midmix.proximity import UnigramStats

        src, fields = self.stats_specs()[name]
        p = self.g.proximity
        stats = UnigramStats.from_files(
            [src],
            self.g.path(self.g.tokenizer),
            name,
            fields=fields,
            max_docs=p.max_docs,
            max_tokens_per_doc=p.max_tokens_per_doc,
            seed=p.seed,
        )
        path = self.stats_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.save(path)  # written under a temporary name, then renamed

    def write_tables(self) -> dict[str, Any]:
        from midmix.proximity import UnigramStats

        stats = {}
        for name in self.stats_specs():
            stats[name.replace("target-", "target:", 1)] = UnigramStats.load(self.stats_path(name))
        results = tables.write_all(self, stats)
        self.log(f"done: tables in {self.out / 'results'}")
        return results
