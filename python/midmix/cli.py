"""The `midmix` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from midmix import _core, mixspec, registry, summary
from midmix._core import MidmixError

SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 10**6, "MB": 10**6, "MIB": 1 << 20,
              "G": 10**9, "GB": 10**9, "GIB": 1 << 30}


def parse_size(text: str) -> int | None:
    """`64MiB`, `1000000`, `none` → bytes (None = no limit)."""
    t = text.strip().upper()
    if t == "NONE":
        return None
    num = t.rstrip("KMGIB")
    unit = t[len(num):]
    if not num or unit not in SIZE_UNITS:
        raise click.BadParameter(f"'{text}' is not a size such as 64MiB, 100MB or 1048576")
    return int(float(num) * SIZE_UNITS[unit])


def resolve_tokenizer(spec: str) -> Path:
    """A tokenizer.json path, a directory holding one, or (online) a hub id."""
    path = Path(spec)
    if path.is_dir() and (path / "tokenizer.json").exists():
        return path / "tokenizer.json"
    if path.exists() or "/" not in spec or spec.endswith(".json"):
        return path
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise click.UsageError(f"{spec} is not a file; hub ids need `huggingface_hub` installed") from e
    return Path(hf_hub_download(spec, "tokenizer.json"))


def fail(e: MidmixError) -> None:
    raise click.ClickException(str(e)) from e


@click.group()
@click.version_option(_core.__version__, prog_name="midmix")
def main() -> None:
    """midmix: exact, fast, deterministic data mixing for language-model training."""


@main.command()
@click.argument("name")
@click.argument("inputs", nargs=-1)
@click.option("--tokenizer", required=True, help="tokenizer.json path (or a hub id when online)")
@click.option("--seq-len", default=2048, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(path_type=Path), help="output directory [default: DATA_ROOT/NAME]")
@click.option("--data-root", type=click.Path(path_type=Path), help="[default: $MIDMIX_DATA_ROOT or ./data]")
@click.option("--text-field", default="text", show_default=True)
@click.option("--text-per-line", is_flag=True, help=".txt inputs: one document per line, not per file")
@click.option("--hf", "hf_name", help="read a `datasets` dataset (local dir/files, or hub name online)")
@click.option("--hf-config", help="dataset configuration name for --hf")
@click.option("--split", default="train", show_default=True, help="split for --hf")
@click.option("--mode", type=click.Choice(["pretrain", "sft"]), default="pretrain", show_default=True)
@click.option("--prompt-field", default="prompt", show_default=True)
@click.option("--response-field", default="response", show_default=True)
@click.option("--mask-prompt/--no-mask-prompt", default=True, show_default=True,
              help="sft: labels are -100 over the prompt")
@click.option("--eos", help="EOS token or id after each document ('none' for no EOS) [default: end-of-text]")
@click.option("--bos", help="BOS token or id before each document [default: none]")
@click.option("--compression", help="zstd or zstd:LEVEL")
@click.option("--hashes", default="", help="comma-separated shard hashes, e.g. sha1,xxh3_64")
@click.option("--size-limit", default="64MiB", show_default=True, help="shard size limit ('none' = one shard)")
@click.option("--on-bad-record", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--num-tasks", type=click.IntRange(min=1), help="split the inputs into this many parts…")
@click.option("--task-index", type=click.IntRange(min=0), help="…and prepare this one (0-based)")
@click.option("--threads", type=click.IntRange(min=1), help="[default: all cores]")
@click.option("--encoder", type=click.Choice(["auto", "fast", "hf"]), default="auto", show_default=True,
              help="auto: the fast exact encoder when it supports the tokenizer, else HF tokenizers")
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def prepare(name: str, inputs: tuple[str, ...], tokenizer: str, seq_len: int, out: Path | None,
            data_root: Path | None, text_field: str, text_per_line: bool, hf_name: str | None,
            hf_config: str | None, split: str, mode: str, prompt_field: str, response_field: str,
            mask_prompt: bool, eos: str | None, bos: str | None, compression: str | None, hashes: str,
            size_limit: str, on_bad_record: str, num_tasks: int | None, task_index: int | None,
            threads: int | None, encoder: str, overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Tokenize and pack corpus files INPUTS into an MDS dataset registered as NAME."""
    if not inputs and not hf_name:
        raise click.UsageError("give INPUT files/directories/globs, or --hf NAME")
    if inputs and hf_name:
        raise click.UsageError("give either INPUT files or --hf, not both")
    if (num_tasks is None) != (task_index is None):
        raise click.UsageError("--num-tasks and --task-index go together")
    root = registry.data_root(data_root)
    out = out or root / name
    if threads:  # the fast encoder sizes its own worker pool from this, once per process
        os.environ.setdefault("FASTOKENS_BPE_THREADS", str(threads))
    kwargs = dict(
        encoder=encoder, overwrite=overwrite, mode=mode, text_field=text_field,
        text_per_line=text_per_line, prompt_field=prompt_field, response_field=response_field,
        mask_prompt=mask_prompt, eos=eos, bos=bos, compression=compression,
        hashes=[h for h in hashes.split(",") if h], size_limit=parse_size(size_limit),
        on_bad_record=on_bad_record, num_tasks=num_tasks, task_index=task_index, threads=threads,
        progress=not quiet,
    )
    tok = resolve_tokenizer(tokenizer)
    try:
        if hf_name:
            from midmix.hf import export_to_parquet

            fields = [prompt_field, response_field] if mode == "sft" else [text_field]
            with export_to_parquet(hf_name, hf_config, split, fields) as (path, label):
                text = _core.prepare(name, [str(path)], tok, seq_len, out, input_labels=[label], **kwargs)
        else:
            text = _core.prepare(name, list(inputs), tok, seq_len, out, **kwargs)
    except MidmixError as e:
        fail(e)
    report = json.loads(text)
    if num_tasks is None:
        registry.register(name, out, root)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not quiet:
        click.echo(f"prepared {out}")
        click.echo("\n".join(summary.report_lines(report)))


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", is_flag=True)
def merge(parts: tuple[Path, ...], out: Path, data_root: Path | None, overwrite: bool, quiet: bool) -> None:
    """Combine the PARTS of a `prepare --num-tasks` run into the dataset a single run gives."""
    try:
        report = json.loads(_core.merge(list(parts), out, overwrite=overwrite, progress=not quiet))
    except MidmixError as e:
        fail(e)
    registry.register(report["name"], out, registry.data_root(data_root))
    if not quiet:
        click.echo(f"merged {len(parts)} parts into {out}")
        click.echo("\n".join(summary.report_lines(report)))


@main.command("build-mix")
@click.option("--weights", help="token shares, e.g. starcoder=0.2,c4=0.8")
@click.option("--schedule", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of phases (instead of --weights)")
@click.option("--tokens", help="budget in tokens (2B, 500M, …) [default: largest with no repeats]")
@click.option("--samples", help="budget in samples")
@click.option("--source", "source_paths", multiple=True, help="NAME=PATH of a prepared dataset (repeatable)")
@click.option("--data-root", type=click.Path(path_type=Path), help="where sources are found by name")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--global-batch", type=click.IntRange(min=1), help="make the total (and phase ends) multiples of G")
@click.option("--exact-per-batch", is_flag=True, help="each global batch holds its exact largest-remainder share")
@click.option("--on-exhaust", type=click.Choice(["error", "repeat", "stop"]), default="error", show_default=True)
@click.option("--max-repeat", type=click.IntRange(min=1), help="with repeat: at most this many passes per source")
@click.option("--size-limit", default="64MiB", show_default=True)
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", is_flag=True)
def build_mix(weights: str | None, schedule: Path | None, tokens: str | None, samples: str | None,
              source_paths: tuple[str, ...], data_root: Path | None, seed: int, global_batch: int | None,
              exact_per_batch: bool, on_exhaust: str, max_repeat: int | None, size_limit: str,
              threads: int | None, out: Path, overwrite: bool, quiet: bool) -> None:
    """Interleave prepared sources by weight (or a schedule) into one MDS stream in training order."""
    if (weights is None) == (schedule is None):
        raise click.UsageError("give --weights or --schedule")
    if exact_per_batch and not global_batch:
        raise click.UsageError("--exact-per-batch needs --global-batch")
    try:
        if schedule:
            if tokens or samples:
                raise click.UsageError("a schedule sets its own lengths: drop --tokens/--samples")
            phases = mixspec.load_schedule(schedule)
        else:
            phases = mixspec.phases_from_weights(weights or "", tokens, samples)
        explicit = {}
        for item in source_paths:
            name, sep, path = item.partition("=")
            if not sep:
                raise click.UsageError(f"--source {item!r}: use NAME=PATH")
            explicit[name] = Path(path)
        root = registry.data_root(data_root)
        names = mixspec.source_order(phases)
        sources = [(n, str(explicit[n] if n in explicit else registry.lookup(n, root))) for n in names]
        text = _core.build_mix(
            sources, [p.as_core() for p in phases], out, seed=seed, global_batch=global_batch,
            exact_per_batch=exact_per_batch, on_exhaust=on_exhaust, max_repeat=max_repeat, overwrite=overwrite,
            size_limit=parse_size(size_limit), threads=threads, progress=not quiet,
        )
    except MidmixError as e:
        fail(e)
    if not quiet:
        click.echo(f"built {out}")
        click.echo("\n".join(summary.mix_lines(json.loads(text))))


def _unigram_options(f):
    for opt in reversed([
        click.option("--tokenizer", help="tokenizer.json for raw files (and decoding top tokens)"),
        click.option("--data-root", type=click.Path(path_type=Path), help="where bare names are found"),
        click.option("--fields", help="raw files: comma-separated fields to count [default: text, or prompt,response]"),
        click.option("--max-docs", type=click.IntRange(min=1), help="raw files: count a seeded sample of N documents"),
        click.option("--max-tokens-per-doc", type=click.IntRange(min=1),
                     help="raw files: count the first N tokens of each field (512 = the paper's script)"),
        click.option("--seed", default=0, show_default=True, type=int),
    ]):
        f = opt(f)
    return f


@main.command()
@click.argument("source")
@_unigram_options
@click.option("--out", type=click.Path(path_type=Path), help="write the counts (and metadata) as .npz")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=0))
def stats(source: str, tokenizer: str | None, data_root: Path | None, fields: str | None, max_docs: int | None,
          max_tokens_per_doc: int | None, seed: int, out: Path | None, top: int) -> None:
    """Token-unigram statistics of SOURCE (NAME=PATH of raw files or a dataset, or a registered NAME)."""
    from midmix import proximity_cli as pc

    try:
        s = pc.load_source(source, tokenizer=tokenizer, data_root=registry.data_root(data_root),
                           fields=fields.split(",") if fields else None, max_docs=max_docs,
                           max_tokens_per_doc=max_tokens_per_doc, seed=seed)
        if out:
            s.save(out)
        dec = tokenizer or _recorded_tokenizer(source, registry.data_root(data_root))
        click.echo("\n".join(pc.summary_lines(s, dec, top)))
    except MidmixError as e:
        fail(e)
    if out:
        click.echo(f"wrote {out}")


def _recorded_tokenizer(spec: str, root: Path) -> str | None:
    name, sep, path = spec.partition("=")
    try:
        d = Path(path) if sep else registry.lookup(name, root)
        tok = json.loads((d / "midmix.json").read_text()).get("tokenizer", {}).get("path")
        return tok if tok and Path(tok).exists() else None
    except (OSError, ValueError, MidmixError):
        return None


@main.command("proximity")
@click.option("--target", "targets", multiple=True, help="NAME=PATH or NAME of a target (repeatable)")
@click.option("--base", help="NAME=PATH or NAME of the base (general) data, e.g. c4")
@click.option("--candidates", default="", help="comma-separated NAME=PATH or NAMEs of midtraining data")
@click.option("--mix", "mixes", multiple=True, help="score a candidate as a token-weighted mix with the base: NAME=W")
@click.option("--matrix", "as_matrix", is_flag=True, help="all pairs among the named sources (Figure 7)")
@_unigram_options
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="write every number shown")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), help="--matrix: write the pairs as CSV")
@click.option("--plot", type=click.Path(path_type=Path), help="PNG: PA bars, or the heatmap with --matrix")
def proximity_cmd(targets: tuple[str, ...], base: str | None, candidates: str, mixes: tuple[str, ...],
                  as_matrix: bool, tokenizer: str | None, data_root: Path | None, fields: str | None,
                  max_docs: int | None, max_tokens_per_doc: int | None, seed: int, json_out: Path | None,
                  csv_out: Path | None, plot: Path | None) -> None:
    """Proximity of candidate midtraining data to target data, and its advantage over the base."""
    from midmix import proximity_cli as pc
    from midmix.proximity import UnigramStats

    root = registry.data_root(data_root)

    def load(spec: str) -> UnigramStats:
        return pc.load_source(spec, tokenizer=tokenizer, data_root=root, fields=fields.split(",") if fields else None,
                              max_docs=max_docs, max_tokens_per_doc=max_tokens_per_doc, seed=seed)
    try:
        weights = dict(mixspec.parse_weights(",".join(mixes))) if mixes else {}
        tgt = [load(t) for t in targets]
        cands = [load(c) for c in candidates.split(",") if c]
        base_stats = load(base) if base else None
        unknown = set(weights) - {c.name for c in cands}
        if unknown:
            raise click.UsageError(f"--mix names {', '.join(sorted(unknown))}, which are not --candidates")
        if weights and base_stats is None:
            raise click.UsageError("--mix needs --base")
        scored = [base_stats.mix(c, weights[c.name]) if c.name in weights else c for c in cands]
        numbers: dict = {"mixtures": weights}
        if as_matrix:
            named = tgt + ([base_stats] if base_stats else []) + scored
            m = pc.matrix(named)
            numbers["matrix"] = m
            names = list(m)
            click.echo(f"{'combined':<22}" + "".join(f"{n[:12]:>13}" for n in names))
            for a in names:
                click.echo(f"{a[:22]:<22}" + "".join(f"{m[a][b]['combined']:>13.4f}" for b in names))
            if csv_out:
                pc.write_matrix_csv(m, csv_out)
            if plot:
                pc.plot_heatmap(m, plot)
        else:
            if not tgt or base_stats is None or not scored:
                raise click.UsageError("give --target, --base and --candidates (or --matrix)")
            lines, table = pc.pa_table(tgt, base_stats, scored)
            numbers.update(table)
            click.echo("\n".join(lines).lstrip("\n"))
            if plot:
                pc.plot_pa(table, plot)
        if json_out:
            json_out.write_text(json.dumps(numbers, indent=2) + "\n")
    except MidmixError as e:
        fail(e)


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path), help="to look NAME up instead of a path")
@click.option("--show", "show", type=click.IntRange(min=0), multiple=True, help="decode sample N as text")
@click.option("--tokenizer", help="tokenizer for --show [default: the one recorded in midmix.json]")
@click.option("--json", "as_json", is_flag=True, help="print midmix.json")
def inspect(directory: Path, data_root: Path | None, show: tuple[int, ...], tokenizer: str | None,
            as_json: bool) -> None:
    """Summarize an MDS dataset (a directory, or a registered name) and decode samples."""
    if not (directory / "index.json").exists():
        try:
            directory = registry.lookup(str(directory), registry.data_root(data_root))
        except MidmixError as e:
            fail(e)
    report_path = directory / "midmix.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"dataset       {directory}")
    click.echo("\n".join(summary.index_lines(summary.read_index(directory))))
    if report and report.get("kind") == "mix":
        click.echo("\n".join(summary.mix_lines(report)))
    elif report:
        click.echo("\n".join(summary.report_lines(report)))
    if not show:
        return
    tok_path = tokenizer or (report and report.get("tokenizer", {}).get("path"))
    if not tok_path:
        raise click.UsageError("--show needs --tokenizer (none is recorded in midmix.json here)")
    try:
        tok = _core.Tokenizer(resolve_tokenizer(tok_path))
        for n in show:
            sample = _core.read_sample(directory, n)
            origin = ""
            if "source" in sample and report and report.get("sources"):
                origin = f"(source {report['sources'][sample['source']]}) "
            click.echo(f"\n--- sample {n} {origin}" + "-" * 60)
            if "tokens" in sample:
                click.echo(tok.decode(sample["tokens"].tolist()))
            elif "input_ids" in sample:
                ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
                masked = sum(1 for x in labels if x == -100)
                click.echo(f"[prompt, {masked} masked tokens]\n" + tok.decode(ids[:masked]))
                click.echo(f"[trained, {len(ids) - masked} tokens]\n" + tok.decode(ids[masked:]))
            else:
                click.echo(repr(sample))
    except IndexError as e:
        raise click.ClickException(str(e)) from e
    except MidmixError as e:
        fail(e)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def train(recipe: str, overrides: tuple[str, ...]) -> None:
    """Train from a recipe in this process (KEY=VALUE overrides, e.g. optimizer.lr=1e-3).

    For several processes or GPUs: composer -n N -m midmix.train RECIPE [KEY=VALUE ...]"""
    try:
        from midmix.train.run import main as run_main
    except ImportError as e:
        raise click.ClickException(f"training needs the [train] extra: pip install 'midmix[train]' ({e})") from e
    sys.exit(run_main([recipe, *overrides]))


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="loss curves PNG [default: none]")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
def report_cmd(runs: tuple[Path, ...], out: Path | None, as_json: bool) -> None:
    """Training runs side by side: final train, in-domain and forgetting losses, and loss curves."""
    from midmix import report

    try:
        loaded = [report.load_run(p) for p in runs]
        rows = report.table(loaded)
        if as_json:
            click.echo(json.dumps([dict(zip(report.COLUMNS, r, strict=True)) for r in rows], indent=2))
        else:
            click.echo(report.render(rows))
        if out is not None:
            report.plot(loaded, out)
            if not as_json:
                click.echo(f"loss curves: {out}")
    except MidmixError as e:
        fail(e)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("grid", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def experiment(grid: str, overrides: tuple[str, ...]) -> None:
    """Run the midtraining study's grid (prepare → mixes → pretrain → branches → SFT → tables).

    Every stage is cached under the grid's `out` directory: a re-run resumes where it stopped.
    KEY=VALUE overrides grid keys, e.g. steps=100 sft.seeds=[1]."""
    try:
        from midmix.experiment.run import main as run_main
    except ImportError as e:
        raise click.ClickException(f"experiments need the [train] extra: pip install 'midmix[train]' ({e})") from e
    try:
        sys.exit(run_main([grid, *overrides]))
    except MidmixError as e:
        fail(e)


if __name__ == "__main__":
    sys.exit(main())
