"""midmix's exception classes. The Rust core raises them too (the file, line or row at fault is in the
message, and on `InputError` also in `.path`, `.line`, `.row`).

They are plain Python classes of this module, so they pickle: an error in a DataLoader worker or in
another rank reaches the process that waits on it as itself, naming the sample and the file."""

from __future__ import annotations


class MidmixError(Exception):
    """Base class of every midmix error."""


class InputError(MidmixError):
    """A bad input file or record; `.path`, `.line`, `.row` say where."""

    path: str | None = None
    line: int | None = None
    row: int | None = None


class TokenizerError(MidmixError):
    """A tokenizer that cannot be read or used."""


class ConfigError(MidmixError):
    """A bad option or combination of options."""


class DatasetError(MidmixError):
    """An output or dataset directory that is not as expected."""


__all__ = ["ConfigError", "DatasetError", "InputError", "MidmixError", "TokenizerError"]
