"""midmix: exact, fast, deterministic data mixing for language-model training.

The public API::

    import midmix
    midmix.prepare("c4", ["raw/c4/*.jsonl.zst"], tokenizer="pythia.json", seq_len=2048)
    midmix.build_mix([midmix.Phase.samples(1024, {"c4": 0.8, "starcoder": 0.2})], "mixes/code20")
    ds = midmix.Dataset.open("code20")            # by registered name or by path
    ds.manifest.total_samples, ds.sample(0)["tokens"]

`midmix._core` (the Rust extension) is private: everything goes through these names.
"""

from midmix.api import (
    VerifyReport,
    __version__,
    build_mix,
    count_unigrams_dataset,
    count_unigrams_files,
    export,
    merge,
    prepare,
    verify,
)
from midmix.errors import ConfigError, DatasetError, InputError, MidmixError, TokenizerError
from midmix.manifest import Manifest, MixManifest, PreparedManifest, read_manifest
from midmix.mixspec import Phase, load_schedule
from midmix.options import ExportOptions, MergeOptions, MixOptions, OutputOptions, PrepareOptions
from midmix.registry import Dataset, data_root
from midmix.tokenizer import Tokenizer

__all__ = [
    "ConfigError",
    "Dataset",
    "DatasetError",
    "ExportOptions",
    "InputError",
    "Manifest",
    "MergeOptions",
    "MidmixError",
    "MixOptions",
    "MixManifest",
    "OutputOptions",
    "Phase",
    "PrepareOptions",
    "PreparedManifest",
    "Tokenizer",
    "TokenizerError",
    "VerifyReport",
    "__version__",
    "build_mix",
    "count_unigrams_dataset",
    "count_unigrams_files",
    "data_root",
    "export",
    "load_schedule",
    "merge",
    "prepare",
    "read_manifest",
    "verify",
]
