"""The `midmix` command line: options → a `midmix.api` call → printed results. No logic of its own."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from midmix import api, describe, mixspec
from midmix import registry as ds
from midmix.errors import ConfigError, MidmixError
from midmix.tokenizer import Tokenizer, open_recorded_tokenizer, resolve_tokenizer

SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "M": 10**6,
    "MB": 10**6,
    "MIB": 1 << 20,
    "G": 10**9,
    "GB": 10**9,
    "GIB": 1 << 30,
}


class Size(click.ParamType):
    """`64MiB`, `1000000`, `none` → bytes (None = no limit)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        t = str(value).strip().upper()
        if t == "NONE":
            return None
        num = t.rstrip("KMGIB")
        unit = t[len(num) :]
        try:
            size = int(float(num) * SIZE_UNITS[unit])
        except (KeyError, ValueError):
            self.fail(f"'{value}' is not a size such as 64MiB, 100MB or 1048576", param, ctx)
        if size < 1:
            self.fail(f"'{value}': a size limit must be at least 1 byte (or 'none')", param, ctx)
        return size


def fail(e: MidmixError) -> None:
    raise click.ClickException(str(e)) from e


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (what batch schedulers send) stops a data command the way Ctrl-C does: the core is told
    to stop, removes its staged output and commits nothing."""
    signal.signal(signal.SIGTERM, _interrupt)


@click.group()
@click.version_option(api.__version__, prog_name="midmix")
def main() -> None:
    """midmix: exact, fast, deterministic data mixing for language-model training."""


@main.command()
@click.argument("name")
@click.argument("inputs", nargs=-1)
@click.option("--tokenizer", required=True, help="tokenizer.json path (or a hub id when online)")
@click.option("--seq-len", default=2048, show_default=True, type=click.IntRange(min=1, max=1 << 24))
@click.option("--out", type=click.Path(path_type=Path), help="output directory [default: DATA_ROOT/NAME]")
@click.option("--data-root", type=click.Path(path_type=Path), help="[default: $MIDMIX_DATA_ROOT or ./data]")
@click.option("--text-field", default="text", show_default=True)
@click.option("--text-per-line", is_flag=True, help=".txt inputs: one document per line, not per file")
@click.option("--hf", "hf_name", help="read a `datasets` dataset (local dir/files, or hub name online)")
@click.option("--hf-config", help="dataset configuration name for --hf")
@click.option("--split", default="train", show_default=True, help="split for --hf")
@click.option("--mode", type=click.Choice(["pretrain", "sft"]), default="pretrain", show_default=True)
@click.option(
    "--prompt-field",
    default="prompt",
    show_default=True,
    help="sft: '' for no prompt (each record's response field alone, e.g. a held-out document)",
)
@click.option("--response-field", default="response", show_default=True)
@click.option(
    "--mask-prompt/--no-mask-prompt", default=True, show_default=True, help="sft: labels are -100 over the prompt"
)
@click.option("--eos", help="EOS token or id after each document ('none' for no EOS) [default: end-of-text]")
@click.option("--bos", help="BOS token or id before each document [default: none]")
@click.option("--compression", help="zstd or zstd:LEVEL")
@click.option("--hashes", default="", help="comma-separated shard hashes, e.g. sha1,xxh3_64")
@click.option(
    "--size-limit", default="64MiB", show_default=True, type=Size(), help="shard size limit ('none' = one shard)"
)
@click.option("--on-bad-record", type=click.Choice(["error", "skip"]), default="error", show_default=True)
@click.option("--num-tasks", type=click.IntRange(min=1), help="split the inputs into this many parts…")
@click.option("--task-index", type=click.IntRange(min=0), help="…and prepare this one (0-based)")
@click.option("--threads", type=click.IntRange(min=1), help="[default: all cores]")
@click.option(
    "--encoder",
    type=click.Choice(["auto", "fast", "hf"]),
    default="auto",
    show_default=True,
    help="auto: the fast exact encoder when it supports the tokenizer, else HF tokenizers",
)
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def prepare(
    name: str, inputs: tuple[str, ...], hf_name: str | None, hashes: str, quiet: bool, as_json: bool, **options: Any
) -> None:
    """Tokenize and pack corpus files INPUTS into an MDS dataset registered as NAME."""
    stop_cleanly_on_sigterm()
    if not inputs and not hf_name:
        raise click.UsageError("give INPUT files/directories/globs, or --hf NAME")
    if inputs and hf_name:
        raise click.UsageError("give either INPUT files or --hf, not both")
    try:
        m = api.prepare(
            name, inputs, hf=hf_name, hashes=[h for h in hashes.split(",") if h], progress=not quiet, **options
        )
    except MidmixError as e:
        fail(e)
    if m.counts.samples == 0 and not m.task:
        skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(m.counts.skipped.items())) or "none"
        click.echo(
            f"warning: {name} holds no samples ({m.counts.documents:,} documents; skipped: {skipped}); "
            "a mix, stats or training cannot use it",
            err=True,
        )
    if m.task and m.counts.documents == 0:
        click.echo(
            f"warning: task {m.task.index} of {m.task.count} got no input: there are fewer byte-balanced "
            "portions than tasks (compressed files and whole-file texts are not split)",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    elif not quiet:
        click.echo(f"prepared {options['out'] or ds.data_root(options['data_root']) / name}")
        click.echo("\n".join(describe.prepared_lines(m)))


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--name", help="register the result as NAME [default: the NAME the parts were prepared under]")
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="print the merged dataset's manifest as JSON")
def merge(
    parts: tuple[Path, ...],
    out: Path,
    data_root: Path | None,
    name: str | None,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Combine the PARTS of a `prepare --num-tasks` run into the dataset a single run gives."""
    stop_cleanly_on_sigterm()
    try:
        m = api.merge(parts, out, data_root=data_root, overwrite=overwrite, progress=not (quiet or as_json), name=name)
    except MidmixError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    elif not quiet:
        click.echo(f"merged {len(parts)} parts into {out}")
        click.echo("\n".join(describe.prepared_lines(m)))


def _output_file(path: Path | None) -> None:
    """An output file's folder is made, as every command makes its output directory (an error that cannot
    is one line, not a traceback from the writer)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(ConfigError(f"{path}: cannot create its folder ({e.strerror})"))


def _listed(values: tuple[str, ...]) -> list[str]:
    """A repeatable option whose values may also be comma-separated: every option that takes several
    values takes them both ways."""
    return [v for value in values for v in value.split(",") if v]


def _named_paths(items: tuple[str, ...], option: str) -> dict[str, Path]:
    """`NAME=PATH` options → {name: path}; a name given twice is an error, not a silent override."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise click.UsageError(f"{option} {item!r}: use NAME=PATH")
        if name in out:
            raise click.UsageError(f"{option}: '{name}' is given twice ({out[name]} and {path})")
        out[name] = Path(path)
    return out


@main.command("build-mix")
@click.option("--weights", help="token shares, e.g. starcoder=0.2,c4=0.8")
@click.option(
    "--schedule",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of phases (instead of --weights)",
)
@click.option("--tokens", help="budget in tokens (2B, 500M, …) [default: largest with no repeats]")
@click.option("--samples", help="budget in samples")
@click.option("--source", "source_paths", multiple=True, help="NAME=PATH of a prepared dataset (repeatable)")
@click.option("--data-root", type=click.Path(path_type=Path), help="where sources are found by name")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--global-batch", type=click.IntRange(min=1), help="make the total (and phase ends) multiples of G")
@click.option(
    "--global-batch-tokens", type=click.IntRange(min=1), help="the global batch in tokens (a multiple of seq_len)"
)
@click.option("--exact-per-batch", is_flag=True, help="each global batch holds its exact largest-remainder share")
@click.option("--on-exhaust", type=click.Choice(["error", "repeat", "stop"]), default="error", show_default=True)
@click.option("--max-repeat", type=click.IntRange(min=1), help="with repeat: at most this many passes per source")
@click.option(
    "--blend-rule",
    type=click.Choice(["midmix", "megatron"]),
    default="midmix",
    show_default=True,
    help="megatron: Megatron-LM's build_blending_indices order (one phase of fixed weights)",
)
@click.option(
    "--materialize",
    is_flag=True,
    help="write MDS shards holding the tokens (for streaming.StreamingDataset) instead of an index",
)
@click.option("--size-limit", default="64MiB", show_default=True, type=Size(), help="--materialize: shard size")
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--name", help="register the mix under this name [default: the --out directory's name]")
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="print the mix's manifest as JSON")
def build_mix(
    weights: str | None,
    schedule: Path | None,
    tokens: str | None,
    samples: str | None,
    source_paths: tuple[str, ...],
    out: Path,
    quiet: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Interleave prepared sources by weight (or a schedule) into one stream in training order.

    Writes an index over the untouched sources (5 bytes per sample) that midmix's loader, inspect,
    stats and verify read; --materialize writes MDS shards instead (`midmix export` does it later)."""
    stop_cleanly_on_sigterm()
    if weights is not None and schedule is not None:
        raise click.UsageError("give --weights or --schedule, not both")
    if weights is None and schedule is None:
        raise click.UsageError("give --weights or --schedule")
    if schedule and (tokens or samples):
        raise click.UsageError("a schedule sets its own lengths: drop --tokens/--samples")
    if schedule and schedule.resolve().is_relative_to(out.resolve()):
        # --overwrite would delete the schedule the mix is built from.
        raise click.UsageError(f"the schedule {schedule} lies inside the output {out}: write the mix elsewhere")
    try:
        phases = (
            mixspec.load_schedule(schedule) if schedule else mixspec.phases_from_weights(weights or "", tokens, samples)
        )
        m = api.build_mix(
            phases, out, sources=_named_paths(source_paths, "--source"), progress=not (quiet or as_json), **options
        )
    except MidmixError as e:
        fail(e)
    asked = mixspec.parse_count(samples) if samples else None
    asked_tokens = mixspec.parse_count(tokens) if tokens else None
    if (asked and asked != m.total_samples) or (asked_tokens and asked_tokens != m.total_tokens):
        what = f"{asked:,} samples" if asked else f"{asked_tokens:,} tokens"
        click.echo(
            f"note: {what} asked; the mix holds {m.total_samples:,} samples = {m.total_tokens:,} tokens "
            f"(whole samples of {m.seq_len} tokens, a multiple of the global batch {m.global_batch or 1})",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    elif not quiet:
        click.echo(f"built {out} ({'index over the sources' if m.is_index else 'MDS shards'})")
        click.echo("\n".join(describe.mix_lines(m)))


@main.command()
@click.argument("mix")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path), help="where MIX is found by name")
@click.option("--size-limit", default="64MiB", show_default=True, type=Size())
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--name", help="also register the export under this name")
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="print the export's manifest as JSON")
def export(mix: str, out: Path, name: str | None, quiet: bool, as_json: bool, **options: Any) -> None:
    """Write index mix MIX (a path or name) as MDS shards that streaming.StreamingDataset, Composer and
    LLM Foundry read: the bytes `build-mix --materialize` writes for the same inputs."""
    stop_cleanly_on_sigterm()
    try:
        m = api.export(mix, out, progress=not (quiet or as_json), name=name, register=name is not None, **options)
    except MidmixError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    elif not quiet:
        click.echo(f"exported {mix} to {out}: {m.total_samples:,} samples, {m.total_tokens:,} tokens")


def _unigram_options(f):
    for opt in reversed(
        [
            click.option("--tokenizer", help="tokenizer.json for raw files (and decoding top tokens)"),
            click.option("--data-root", type=click.Path(path_type=Path), help="where bare names are found"),
            click.option(
                "--fields", help="raw files: comma-separated fields to count [default: text, or prompt,response]"
            ),
            click.option(
                "--max-docs", type=click.IntRange(min=1), help="raw files: count a seeded sample of N documents"
            ),
            click.option(
                "--max-tokens-per-doc",
                type=click.IntRange(min=1),
                help="raw files: count the first N tokens of each field (512 = the paper's script)",
            ),
            click.option("--seed", default=0, show_default=True, type=int),
        ]
    ):
        f = opt(f)
    return f


@main.command()
@click.argument("source")
@_unigram_options
@click.option("--out", type=click.Path(path_type=Path), help="write the counts (and metadata) as .npz")
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="print the summary (and the top ids) as JSON")
def stats(
    source: str,
    tokenizer: str | None,
    data_root: Path | None,
    fields: str | None,
    max_docs: int | None,
    max_tokens_per_doc: int | None,
    seed: int,
    out: Path | None,
    top: int,
    as_json: bool,
) -> None:
    """Token-unigram statistics of SOURCE (NAME=PATH of raw files or a dataset, or a registered NAME)."""
    stop_cleanly_on_sigterm()
    from midmix import stats_service as pc

    _output_file(out)
    try:
        s = pc.load_source(
            source,
            tokenizer=tokenizer,
            data_root=ds.data_root(data_root),
            fields=fields.split(",") if fields else None,
            max_docs=max_docs,
            max_tokens_per_doc=max_tokens_per_doc,
            seed=seed,
        )
        if out:
            s.save(out)
        if as_json:
            click.echo(json.dumps(pc.summary_numbers(s, top), indent=2))
            return
        dec = tokenizer or pc.recorded_tokenizer(source, ds.data_root(data_root))
        click.echo("\n".join(pc.summary_lines(s, dec, top)))
    except MidmixError as e:
        fail(e)
    if out:
        click.echo(f"wrote {out}")


@main.command("proximity")
@click.option(
    "--target", "targets", multiple=True, help="NAME=PATH or NAME of a target (repeatable, or comma-separated)"
)
@click.option("--base", help="NAME=PATH or NAME of the base (general) data, e.g. c4")
@click.option(
    "--candidates", multiple=True, help="NAME=PATH or NAME of midtraining data (repeatable, or comma-separated)"
)
@click.option(
    "--mix",
    "mixes",
    multiple=True,
    help="score a candidate as a token-weighted mix with the base: NAME=W (repeatable, or comma-separated)",
)
@click.option("--matrix", "as_matrix", is_flag=True, help="all pairs among the named sources (Figure 7)")
@_unigram_options
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="write every number shown")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), help="--matrix: write the pairs as CSV")
@click.option("--plot", type=click.Path(path_type=Path), help="PNG: PA bars, or the heatmap with --matrix")
def proximity_cmd(
    targets: tuple[str, ...],
    base: str | None,
    candidates: tuple[str, ...],
    mixes: tuple[str, ...],
    as_matrix: bool,
    tokenizer: str | None,
    data_root: Path | None,
    fields: str | None,
    max_docs: int | None,
    max_tokens_per_doc: int | None,
    seed: int,
    json_out: Path | None,
    csv_out: Path | None,
    plot: Path | None,
) -> None:
    """Proximity of candidate midtraining data to target data, and its advantage over the base."""
    stop_cleanly_on_sigterm()
    from midmix import stats_service as pc

    if csv_out and not as_matrix:
        raise click.UsageError("--csv goes with --matrix")
    for path in (json_out, csv_out, plot):
        _output_file(path)
    try:
        loader = pc.SourceLoader(
            tokenizer=tokenizer,
            data_root=ds.data_root(data_root),
            fields=fields.split(",") if fields else None,
            max_docs=max_docs,
            max_tokens_per_doc=max_tokens_per_doc,
            seed=seed,
        )
        result = pc.compare(
            loader,
            targets=_listed(targets),
            base=base,
            candidates=_listed(candidates),
            mixes=dict(mixspec.parse_weights(",".join(mixes))) if mixes else {},
            as_matrix=as_matrix,
        )
        click.echo("\n".join(result.lines))
        if csv_out:
            pc.write_matrix_csv(result.numbers["matrix"], csv_out)
        if plot:
            result.plot(plot)
        if json_out:
            json_out.write_text(json.dumps(result.numbers, indent=2) + "\n")
    except MidmixError as e:
        fail(e)


@main.command()
@click.argument("directory")
@click.option("--data-root", type=click.Path(path_type=Path), help="to look NAME up instead of a path")
@click.option("--show", "show", type=click.IntRange(min=0), multiple=True, help="decode sample N as text")
@click.option("--tokenizer", help="tokenizer for --show [default: the one recorded in midmix.json]")
@click.option("--json", "as_json", is_flag=True, help="print midmix.json")
def inspect(
    directory: str, data_root: Path | None, show: tuple[int, ...], tokenizer: str | None, as_json: bool
) -> None:
    """Summarize an MDS dataset (a directory, or a registered name) and decode samples."""
    try:
        d = ds.Dataset.open(directory, data_root)
        m = d.manifest
        if as_json:
            click.echo(json.dumps(m.to_dict() if m else None, indent=2))
            return
        click.echo(f"dataset       {d.path}")
        click.echo("\n".join(describe.index_lines(d)))
        if m:
            click.echo("\n".join(describe.manifest_lines(m)))
        if not show:
            return
        if tokenizer:
            tok = Tokenizer(resolve_tokenizer(tokenizer))
            if m and m.tokenizer.sha256 != tok.sha256:
                click.echo(
                    f"warning: decoding with {tokenizer}, not the tokenizer {d.path} was prepared with "
                    f"({m.tokenizer.path}): other ids may show other text",
                    err=True,
                )
        elif m and m.tokenizer.path:
            tok = open_recorded_tokenizer(m.tokenizer.path, m.tokenizer.sha256, d.path)
        else:
            raise click.UsageError("--show needs --tokenizer (none is recorded in midmix.json here)")
        for n in show:
            click.echo(f"\n--- sample {n} {describe.sample_origin(d, n)}" + "-" * 60)
            click.echo("\n".join(describe.sample_lines(d.sample(n), tok)))
    except IndexError as e:
        raise click.ClickException(str(e)) from e
    except MidmixError as e:
        fail(e)


@main.command()
@click.argument("directory")
@click.option("--data-root", type=click.Path(path_type=Path), help="to look NAME up instead of a path")
@click.option("--json", "as_json", is_flag=True, help="print what was checked as JSON")
def verify(directory: str, data_root: Path | None, as_json: bool) -> None:
    """Check a dataset or mix (a directory or a registered name) against its own records.

    Sample counts (index.json vs midmix.json), shard sizes on disk, every recorded shard hash, and
    every token id below the vocabulary size. Exits 1 naming the first mismatch."""
    stop_cleanly_on_sigterm()
    try:
        r = api.verify(directory, data_root=data_root)
    except MidmixError as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({"ok": True, "dataset": directory, **dataclasses.asdict(r)}, indent=2))
        return
    click.echo(f"ok            {directory} ({r.kind}): {r.samples:,} samples in {r.shards} shards")
    click.echo(f"hashes        {r.hashes_checked} recorded shard hashes recomputed and equal")
    click.echo(f"token ids     {r.tokens_checked:,} checked below vocab size {r.vocab_size:,}")


@main.command("ls")
@click.option("--data-root", type=click.Path(path_type=Path), help="[default: $MIDMIX_DATA_ROOT or ./data]")
@click.option("--json", "as_json", is_flag=True, help="print the registry's entries as JSON")
def ls_cmd(data_root: Path | None, as_json: bool) -> None:
    """The names registered under the data root: each one's kind, directory, and whether it still holds
    the dataset registered (a name whose directory now holds another is refused on lookup)."""
    root = ds.data_root(data_root)
    if not root.is_dir():
        fail(ConfigError(f"data root {root} does not exist (give --data-root, or set MIDMIX_DATA_ROOT)"))
    try:
        entries = ds.registered(root)
    except MidmixError as e:
        fail(e)
    rows = []
    for name, entry in sorted(entries.items()):
        try:
            ds.lookup(name, root)
            state = "ok"
        except MidmixError as e:
            state = f"stale: {e}"
        rows.append({"name": name, "kind": entry.kind, "path": entry.path, "state": state})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no names registered under {root}")
    for r in rows:
        stale = "" if r["state"] == "ok" else f"  ({r['state']})"
        click.echo(f"{r['name']:<20} {r['kind'] or '?':<9} {r['path']}{stale}")


@main.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--data-root", type=click.Path(path_type=Path), help="[default: $MIDMIX_DATA_ROOT or ./data]")
def rm_cmd(names: tuple[str, ...], data_root: Path | None) -> None:
    """Forget registered NAMES. Their directories are left as they are (midmix deletes only what a command
    of it is replacing): remove those yourself."""
    root = ds.data_root(data_root)
    try:
        for name in dict.fromkeys(names):  # a name given twice is forgotten once
            gone = ds.unregister(name, root)
            note = ""
            if Path(gone.path).resolve() == (root / name).resolve():
                note = f"; as {root / name} it is still found by that name until you move or delete it"
            click.echo(f"removed '{name}' (its directory {gone.path} is left as it is{note})")
    except MidmixError as e:
        fail(e)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--print-config", is_flag=True, help="print the resolved recipe (overrides and defaults applied), then exit"
)
def train(recipe: str, overrides: tuple[str, ...], print_config: bool) -> None:
    """Train from a recipe in this process (KEY=VALUE overrides, e.g. optimizer.lr=1e-3). The recipe's keys
    are those `--print-config` shows, documented in the README's Training section.

    For several processes or GPUs: composer -n N -m midmix.train RECIPE [KEY=VALUE ...]"""
    from midmix.train import config as cfgmod
    from midmix.train import preflight

    try:  # before torch and Composer are imported: a mistake is one line in about a second
        if print_config:  # the recipe's keys, whether or not its data exists yet
            cfg, _ = cfgmod.load(recipe, overrides)
            click.echo(yaml.safe_dump(preflight.resolved(cfg), sort_keys=False).rstrip())
            return
        preflight.load_checked(recipe, overrides)
    except MidmixError as e:
        fail(e)
    try:
        from midmix.train.run import main as run_main
    except ImportError as e:
        raise click.ClickException(f"training needs the [train] extra: pip install 'midmix[train]' ({e})") from e
    sys.exit(run_main([recipe, *overrides]))


@main.command("export-model")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="the Hugging Face model directory")
@click.option(
    "--tokenizer",
    help="tokenizer.json (or a directory holding one) to use when the one recorded in the "
    "training data's midmix.json is gone; checked against its recorded sha256",
)
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
def export_model_cmd(run: Path, out: Path, tokenizer: str | None, overwrite: bool) -> None:
    """Write training run RUN (a run directory, for its latest checkpoint, or a checkpoint file in one)
    as a Hugging Face model directory: GPT-NeoX weights (safetensors), config and tokenizer, for
    `AutoModelForCausalLM.from_pretrained(OUT)` and `lm_eval --model hf --model_args pretrained=OUT`."""
    try:
        from midmix.train.export import EXPORT_FILE, export_model
    except ImportError as e:
        raise click.ClickException(f"export-model needs the [train] extra: pip install 'midmix[train]' ({e})") from e
    try:
        r = export_model(run, out, tokenizer=tokenizer, overwrite=overwrite)
    except MidmixError as e:
        fail(e)
    step = "unknown step" if r.step is None else f"step {r.step:,}"
    click.echo(f"exported {r.run_name} ({step}{'' if r.completed else ', run not completed'}) to {out}")
    click.echo(
        f"model         GPTNeoXForCausalLM ({r.arch}), vocabulary {r.vocab_size:,} "
        f"(tokenizer {r.tokenizer_vocab_size:,}), safetensors"
    )
    click.echo(f"tokenizer     {r.tokenizer} (sha256 {r.tokenizer_sha256[:12]}…)")
    click.echo(f"provenance    {Path(out) / EXPORT_FILE}")


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="loss curves PNG [default: none]")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
def report_cmd(runs: tuple[Path, ...], out: Path | None, as_json: bool) -> None:
    """Training runs side by side: final train, in-domain and forgetting losses, and loss curves."""
    from midmix import run_report as report

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
@click.option(
    "--smoke", is_flag=True, help="every stage at toy sizes on CPU (tiny model, fp32, few steps; outputs in OUT-smoke)"
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="prepare the data and check it, then print runs, tokens, FLOPs and GPU-hours per stage; no training",
)
@click.option(
    "--mfu",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.3,
    show_default=True,
    help="--dry-run: model FLOPs utilization the hours assume",
)
@click.option(
    "--peak-tflops",
    type=click.FloatRange(0, min_open=True),
    default=989.0,
    show_default=True,
    help="--dry-run: the GPU's dense peak (989: H100 SXM bf16)",
)
@click.option(
    "--startup-s",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="--dry-run: seconds of start-up per training run",
)
@click.option(
    "--launcher",
    type=click.Choice(["serial", "local", "slurm"]),
    default="serial",
    show_default=True,
    help="serial: this process, one job after another; local: --jobs worker processes (one GPU each "
    "when training on GPUs); slurm: one sbatch job array per stage, chained with afterok",
)
@click.option(
    "--jobs", "-j", type=click.IntRange(1), default=1, show_default=True, help="--launcher local: worker processes"
)
@click.option(
    "--redo-stale",
    is_flag=True,
    help="retrain runs whose inputs changed (they are refused otherwise); old runs move to OUT/stale/",
)
@click.option("--partition", help="--launcher slurm: partition (overrides the grid's slurm.partition)")
@click.option("--account", help="--launcher slurm: account to charge")
@click.option("--time", "time_limit", help="--launcher slurm: time limit per task, e.g. 4:00:00")
@click.option(
    "--gpus-per-job",
    type=click.IntRange(0, 1),
    default=None,
    help="--launcher slurm: GPUs per training task (0 on a CPU cluster; default: the grid's, 1)",
)
@click.option("--wait", is_flag=True, help="--launcher slurm: wait until the submitted jobs finish, then report")
def experiment(
    grid: str,
    overrides: tuple[str, ...],
    smoke: bool,
    dry_run: bool,
    mfu: float,
    peak_tflops: float,
    startup_s: float,
    launcher: str,
    jobs: int,
    redo_stale: bool,
    partition: str | None,
    account: str | None,
    time_limit: str | None,
    gpus_per_job: int | None,
    wait: bool,
) -> None:
    """Run the midtraining study's grid (prepare → mixes → pretrain → branches → SFT → tables).

    Every output is cached under the grid's `out` directory, keyed on what it was built from: a re-run
    (any launcher) runs only what is missing or whose inputs changed.
    KEY=VALUE overrides grid keys, e.g. steps=100 sft.seeds=[1]."""
    try:
        from midmix.experiment.run import main as run_main
    except ImportError as e:
        raise click.ClickException(f"experiments need the [train] extra: pip install 'midmix[train]' ({e})") from e
    slurm = {
        k: v
        for k, v in {
            "partition": partition,
            "account": account,
            "time": time_limit,
            "gpus_per_job": gpus_per_job,
        }.items()
        if v is not None
    }
    try:
        sys.exit(
            run_main(
                grid,
                overrides,
                smoke_run=smoke,
                dry_run=dry_run,
                mfu=mfu,
                peak=peak_tflops * 1e12,
                startup_s=startup_s,
                launcher=launcher,
                jobs=jobs,
                redo_stale=redo_stale,
                slurm_options=slurm,
                wait=wait,
            )
        )
    except MidmixError as e:
        fail(e)


if __name__ == "__main__":
    sys.exit(main())
