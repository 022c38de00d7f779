"""matplotlib for the PNGs midmix writes: an optional dependency (the [plot] extra), used headless."""

from __future__ import annotations

from typing import Any

from midmix.errors import ConfigError


def pyplot(purpose: str) -> Any:
    """`matplotlib.pyplot` on the Agg backend, or a ConfigError saying that `purpose` needs matplotlib."""
    try:
        import matplotlib
    except ImportError as e:
        raise ConfigError(f"{purpose} needs matplotlib: pip install 'midmix[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
