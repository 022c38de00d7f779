"""midmix: exact, fast, deterministic data mixing for language-model training."""

from midmix._core import (
    ConfigError,
    DatasetError,
    InputError,
    MidmixError,
    Tokenizer,
    TokenizerError,
    __version__,
)

__all__ = [
    "ConfigError",
    "DatasetError",
    "InputError",
    "MidmixError",
    "Tokenizer",
    "TokenizerError",
    "__version__",
]
