"""midmix's exception classes. They are raised by the Rust core (the file, line or row at fault is
in the message, and on `InputError` also in `.path`, `.line`, `.row`) and by the Python side alike."""

from midmix._core import ConfigError, DatasetError, InputError, MidmixError, TokenizerError

__all__ = ["ConfigError", "DatasetError", "InputError", "MidmixError", "TokenizerError"]
