"""`prepare --hf`: read a dataset through the Hugging Face `datasets` library.

The selected columns are exported to a temporary Parquet file that the Rust core reads like any
other input, so no per-document Python work happens. Local dataset directories (saved with
`save_to_disk`), local data files and, when online, hub names all work.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from midmix.errors import ConfigError


@contextmanager
def export_to_parquet(name: str, config: str | None, split: str, columns: list[str]) -> Iterator[tuple[Path, str]]:
    """Yield (parquet path, label) for the requested split's columns; the file is removed after."""
    try:
        import datasets
    except ImportError as e:
        raise ConfigError("--hf needs the `datasets` package: pip install 'midmix[hf]'") from e

    path = Path(name)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ConfigError(f"{name}: no split '{split}' (splits: {', '.join(ds)})")
            ds = ds[split]
    else:
        ds = datasets.load_dataset(name, config, split=split)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"hf:{name}: no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(ds.column_names)})"
        )
    label = f"hf:{name}" + (f":{config}" if config else "") + f":{split}"
    with tempfile.TemporaryDirectory(prefix="midmix-hf-") as tmp:
        out = Path(tmp) / "export.parquet"
        ds.select_columns(columns).to_parquet(str(out))
        yield out, label
