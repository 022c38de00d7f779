"""Parsing what `build-mix` is asked for: weights, token budgets and schedule files.

Only parsing and validation live here; planning and writing happen in the Rust core.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from midmix import _core
from midmix.errors import ConfigError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_count(text: str | int | float, what: str = "count") -> int:
    """`2B`, `500M`, `12.6B`, `1e9`, `4096` → an integer (B = 10^9)."""
    if isinstance(text, bool):
        raise ConfigError(f"bad {what}: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*", str(text))
        if not m:
            raise ConfigError(f"bad {what} {text!r}: use a number such as 4096, 500M, 2B or 12.6B")
        value = float(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"bad {what} {text!r}: must be positive")
    if value >= 2**63:
        raise ConfigError(f"bad {what} {text!r}: too large (at most 9.2e18)")
    return int(round(value))


def parse_weights(text: str) -> list[tuple[str, float]]:
    """`starcoder=0.2,c4=0.8` → [("starcoder", 0.2), ("c4", 0.8)], checked."""
    out: list[tuple[str, float]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"bad weight {part!r}: use NAME=WEIGHT, e.g. c4=0.8")
        try:
            w = float(value)
        except ValueError as e:
            raise ConfigError(f"bad weight {part!r}: {value!r} is not a number") from e
        out.append((name, w))
    return check_weights(out, "--weights")


def check_weights(weights: list[tuple[str, float]], where: str) -> list[tuple[str, float]]:
    """The core's one check of a phase's weights (`midmix_core::mix::check_weights`), asked before any work."""
    _core.check_weights(weights, where)
    return weights


@dataclass(frozen=True)
class Phase:
    """One phase of a mix: its length, the sources' weights (normalized by the core) and whether the
    weights move linearly from the previous phase's. The binding reads these attributes by name."""

    kind: Literal["tokens", "samples", "fill"]  # fill: until a source would repeat (last phase only)
    length: int
    weights: list[tuple[str, float]]
    ramp: bool = False

    @classmethod
    def samples(cls, n: int, weights: dict[str, float], ramp: bool = False) -> Phase:
        return cls("samples", n, list(weights.items()), ramp)

    @classmethod
    def tokens(cls, n: int, weights: dict[str, float], ramp: bool = False) -> Phase:
        return cls("tokens", n, list(weights.items()), ramp)

    @classmethod
    def fill(cls, weights: dict[str, float], ramp: bool = False) -> Phase:
        return cls("fill", 0, list(weights.items()), ramp)


def phases_from_weights(weights: str, tokens: str | None, samples: str | None) -> list[Phase]:
    w = parse_weights(weights)
    if tokens and samples:
        raise ConfigError("give --tokens or --samples, not both")
    if tokens:
        return [Phase("tokens", parse_count(tokens, "--tokens"), w)]
    if samples:
        return [Phase("samples", parse_count(samples, "--samples"), w)]
    return [Phase("fill", 0, w)]


PHASE_KEYS = {"tokens", "samples", "weights", "ramp"}


def load_schedule(path: str | os.PathLike[str]) -> list[Phase]:
    """A YAML file `phases: [{tokens|samples: N, weights: {name: w}, ramp: linear}]`; the last
    phase may leave out its length (run until a source would repeat)."""
    from midmix import strict_yaml

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read schedule: {e}") from e
    doc = strict_yaml.load(text, str(path))
    if not isinstance(doc, dict) or set(doc) != {"phases"} or not isinstance(doc["phases"], list):
        raise ConfigError(f"{path}: a schedule is a mapping with one key, 'phases', holding a list")
    phases = []
    for i, ph in enumerate(doc["phases"], start=1):
        where = f"{path}: phase {i}"
        if not isinstance(ph, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(ph) - PHASE_KEYS
        if unknown:
            allowed = ", ".join(sorted(PHASE_KEYS))
            raise ConfigError(f"{where}: unknown key {', '.join(sorted(unknown))} (allowed: {allowed})")
        if "tokens" in ph and "samples" in ph:
            raise ConfigError(f"{where}: give tokens or samples, not both")
        weights = ph.get("weights")
        if not isinstance(weights, dict):
            raise ConfigError(f"{where}: 'weights' must map source names to weights")
        try:
            w = [(str(k), float(v)) for k, v in weights.items()]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: weights must be numbers ({e})") from e
        w = check_weights(w, where)
        ramp = ph.get("ramp")
        if ramp not in (None, "linear"):
            raise ConfigError(f"{where}: ramp must be 'linear' (or absent), got {ramp!r}")
        if "tokens" in ph:
            spec = Phase("tokens", parse_count(ph["tokens"], f"phase {i} tokens"), w, ramp == "linear")
        elif "samples" in ph:
            spec = Phase("samples", parse_count(ph["samples"], f"phase {i} samples"), w, ramp == "linear")
        elif i == len(doc["phases"]):
            spec = Phase("fill", 0, w, ramp == "linear")
        else:
            raise ConfigError(f"{where}: needs 'tokens' or 'samples' (only the last phase may leave it out)")
        phases.append(spec)
    if not phases:
        raise ConfigError(f"{path}: no phases")
    return phases


def source_order(phases: list[Phase]) -> list[str]:
    """Sources in order of first appearance: their index in the `source` column."""
    seen: list[str] = []
    for ph in phases:
        for name, _ in ph.weights:
            if name not in seen:
                seen.append(name)
    return seen
