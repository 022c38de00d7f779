"""`midmix.manifest` against the schema of `midmix.json` the core emits (`midmix_core::manifest::schema`): a
field added, removed or retyped in Rust and not in Python fails here, not on a user's dataset."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from midmix import _core, manifest

SCHEMA = json.loads(_core.manifest_schema())

# JSON schema types → the Python types a field of that type may be declared with.
_PY_TYPES = {
    "string": {str},
    "integer": {int},
    "number": {float},
    "boolean": {bool},
    "null": {type(None)},
    "array": {list},
    "object": {dict},
}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return root["$defs"][ref.rsplit("/", 1)[1]] if ref else schema


def _json_types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """The JSON types a property may hold (`anyOf` of a `$ref` and null is an optional object)."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return set().union(*(_json_types(s, root) for s in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        return {"string"}
    kind = schema.get("type", "object")
    return set(kind) if isinstance(kind, list) else {kind}


def _python_types(tp: Any) -> set[type]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return set().union(*(_python_types(a) for a in typing.get_args(tp)))
    if origin is Literal:
        return {type(a) for a in typing.get_args(tp)}
    if dataclasses.is_dataclass(tp):
        return {dict}
    return {origin or tp}


def _check(cls: type, schema: dict[str, Any], root: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(props) - set(fields)):
        problems.append(f"{where}.{name}: written by the core, missing in {cls.__name__}")
    for name in sorted(set(fields) - set(props)):
        problems.append(f"{where}.{name}: in {cls.__name__}, not written by the core")
    for name in sorted(set(props) & set(fields)):
        f = fields[name]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if name not in required and not has_default:
            problems.append(f"{where}.{name}: may be absent from midmix.json, but {cls.__name__} requires it")
        want = set().union(*(_PY_TYPES[t] for t in _json_types(props[name], root)))
        have = _python_types(hints[name])
        if int in have and float in want:
            have = have - {int} | {float}
        if not have <= want | {type(None)} or (type(None) in want) != (type(None) in have):
            problems.append(
                f"{where}.{name}: the core writes {sorted(_json_types(props[name], root))}, "
                f"{cls.__name__} declares {hints[name]}"
            )
        sub = _resolve(props[name], root)
        if "anyOf" in sub:  # Option<Struct>
            sub = next((_resolve(s, root) for s in sub["anyOf"] if s.get("type") != "null"), sub)
        if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
            sub = _resolve(sub["items"], root)
        nested = [t for t in typing.get_args(hints[name]) or (hints[name],) if dataclasses.is_dataclass(t)]
        for arg in typing.get_args(hints[name]):
            nested += [t for t in typing.get_args(arg) if dataclasses.is_dataclass(t)]
        if nested and "properties" in sub:
            problems += _check(nested[0], sub, root, f"{where}.{name}")
    return problems


def test_the_python_manifest_mirrors_the_schema_the_core_writes() -> None:
    assert set(SCHEMA) == {"prepared", "mix"}
    problems = _check(manifest.PreparedManifest, SCHEMA["prepared"], SCHEMA["prepared"], "prepared")
    problems += _check(manifest.MixManifest, SCHEMA["mix"], SCHEMA["mix"], "mix")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_field_python_lacks() -> None:
    schema = json.loads(json.dumps(SCHEMA["prepared"]))
    schema["properties"]["min_doc_tokens"] = {"type": "integer"}
    schema["properties"]["seq_len"] = {"type": "string"}
    problems = _check(manifest.PreparedManifest, schema, schema, "prepared")
    assert any("min_doc_tokens: written by the core, missing" in p for p in problems), problems
    assert any("seq_len: the core writes ['string']" in p for p in problems), problems
