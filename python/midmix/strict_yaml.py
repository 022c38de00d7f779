"""YAML as midmix reads it everywhere (schedules, recipes, grids): `yaml.safe_load`, except that a key
given twice in one mapping is an error naming the line, not a silent override."""

from __future__ import annotations

from typing import Any

import yaml

from midmix.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(f"line {line}: key {key!r} is given twice (first on line {seen[key]})")
            except TypeError:  # an unhashable key: the base constructor reports it
                break
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(text: str, where: str) -> Any:
    """The document in `text`; errors (bad YAML, duplicate keys) are ConfigErrors that start with `where`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e})") from e
