"""Values that validate against a schema, made up deterministically from the prompt.

Takes both JSON Schema (``responseJsonSchema``, ``parametersJsonSchema``) and Google's
OpenAPI-ish form (``responseSchema``, ``parameters``: uppercase ``type``, ``nullable``,
``format``, ``enum``). Every listed property is filled (required ones always), ``anyOf`` /
``oneOf`` take their first non-null branch, ``$ref`` follows ``$defs``/``definitions``.

Values come from the prompt so tool calls look plausible: a string is the first quoted
phrase in the prompt (else the prompt's first words), a number is the first number in the
prompt (clamped to ``minimum``/``maximum``), an enum is its first member.
"""

from __future__ import annotations

import re
from typing import Any

_QUOTED = re.compile(r"""'([^']+)'|"([^"]+)"|“([^”]+)”""")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_MAX_DEPTH = 8


def normalize(schema: Any) -> Any:
    """Google's OpenAPI-ish schema as JSON Schema: lowercase types, ``nullable`` as a union."""
    if isinstance(schema, list):
        return [normalize(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: normalize(sub) for name, sub in value.items()}
        elif key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "type" and isinstance(value, list):
            out[key] = [str(t).lower() for t in value]
        elif key in ("minItems", "maxItems", "minLength", "maxLength") and isinstance(value, str):
            out[key] = int(value)
        elif key in ("propertyOrdering", "nullable"):
            continue
        else:
            out[key] = normalize(value)
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


class ValueMaker:
    """Makes schema-valid values whose strings and numbers come from ``prompt``."""

    def __init__(self, prompt: str) -> None:
        quoted = _QUOTED.search(prompt)
        words = " ".join(prompt.split()[:6]).strip(" ?.!,")
        self._text = next((g for g in quoted.groups() if g), "") if quoted else words
        number = _NUMBER.search(prompt)
        self._number = float(number.group()) if number else 1.0

    def make(self, schema: Any, root: Any = None, depth: int = 0, name: str = "") -> Any:
        """A value that validates against ``schema`` (already :func:`normalize`-d)."""
        root = schema if root is None else root
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return None if depth > _MAX_DEPTH else self._string({}, name)
        if "$ref" in schema:
            return self.make(_resolve(root, schema["$ref"]), root, depth + 1, name)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for combo in ("anyOf", "oneOf"):
            if schema.get(combo):
                branches = [b for b in schema[combo] if _type_of(b) != "null"] or schema[combo]
                return self.make(branches[0], root, depth + 1, name)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = _resolve(root, part["$ref"]) if "$ref" in part else part
                merged = {**merged, **part}
            return self.make(merged, root, depth + 1, name)
        kind = _type_of(schema)
        if kind == "object" or (kind is None and "properties" in schema):
            props = schema.get("properties") or {}
            return {
                key: self.make(sub, root, depth + 1, key)
                for key, sub in props.items()
                if depth < _MAX_DEPTH - 1 or key in schema.get("required", ())
            }
        if kind == "array":
            count = max(1, int(schema.get("minItems", 1)))
            if "maxItems" in schema:
                count = min(count, int(schema["maxItems"]))
            return [self.make(schema.get("items", {}), root, depth + 1, name) for _ in range(count)]
        if kind in ("integer", "number"):
            return self._number_in(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._string(schema, name)

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2026-01-01T00:00:00Z"
        if fmt == "date":
            return "2026-01-01"
        text = self._text or name or "example"
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        if "minLength" in schema and len(text) < int(schema["minLength"]):
            text = text.ljust(int(schema["minLength"]), "x")
        return text

    def _number_in(self, schema: dict[str, Any], *, integer: bool) -> float | int:
        value = self._number
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(low, (int, float)) and value < low:
            value = float(low) + (1 if "exclusiveMinimum" in schema else 0)
        if isinstance(high, (int, float)) and value > high:
            value = float(high) - (1 if "exclusiveMaximum" in schema else 0)
        if integer:
            return int(value)
        return int(value) if value == int(value) else value


def _type_of(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return str(non_null[0]) if non_null else "null"
    return str(kind) if kind is not None else None


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node
