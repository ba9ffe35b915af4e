"""Validate a ModelDeployment against the CRD schema without an API server (local mode).

The cluster's API server validates with the CRD's OpenAPI schema and its CEL rules. Local mode
reads the same CRD file and checks the same things here, with messages in the API server's
words (``spec.minAccuracy: Invalid value: 1.5: must be less than or equal to 1``), so a YAML
that `make demo` accepts is one `kubectl apply` accepts, and the other way round.
Supported: type, required, enum, pattern, minimum/maximum, minLength/maxLength,
minItems/maxItems, min/maxProperties, unknown fields (kubectl's strict field validation), nullable,
x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields and CEL
x-kubernetes-validations (evaluated with cel-python).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from .names import API_VERSION, KIND
from .spec import default, openapi_schema

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
}


class ValidationError(ValueError):
    """The object is not a valid ModelDeployment; `errors` holds one line per problem."""

    def __init__(self, name: str, errors: list[str]) -> None:
        self.errors = errors
        detail = "; ".join(errors)
        super().__init__(f'ModelDeployment "{name}" is invalid: {detail}')


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    return isinstance(value, _TYPES[kind])


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@functools.cache
def _cel_program(rule: str) -> Any:
    import celpy

    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def _cel(rule: str, value: Any) -> bool:
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    try:
        result = _cel_program(rule).evaluate({"self": json_to_cel(value)})
    except CELEvalError:
        return False  # the API server rejects an object whose rule cannot be evaluated
    return bool(result)


def _walk_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[str]
) -> None:
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            f"{path}: Too many: {len(value)}: must have at most {schema['maxProperties']} items"
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            f"{path}: Invalid value: should have at least {schema['minProperties']} properties"
        )
    properties: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path + '.' if path else ''}{name}: Required value")
    additional = schema.get("additionalProperties")
    for name, item in value.items():
        child = f"{path}.{name}" if path else name
        if name in properties:
            _walk(item, properties[name], child, errors)
        elif isinstance(additional, dict):
            _walk(item, additional, child, errors)
        elif not schema.get("x-kubernetes-preserve-unknown-fields") and properties:
            errors.append(f'unknown field "{child}"')


def _walk(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    before = len(errors)
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{path}: Invalid value: null: {path} in body must not be null")
        return
    if not _type_ok(value, schema):
        expected = (
            "integer or string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
        )
        errors.append(
            f'{path}: Invalid value: "{type(value).__name__}": {path} in body must be of '
            f"type {expected}: {_show(value)}"
        )
        return
    shown = _show(value)
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_show(v) for v in schema["enum"])
        errors.append(f"{path}: Unsupported value: {shown}: supported values: {allowed}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                f"{path}: Invalid value: {shown}: {path} in body should match '{schema['pattern']}'"
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                f"{path}: Invalid value: {shown}: {path} in body should be at least "
                f"{schema['minLength']} chars long"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(
                f"{path}: Invalid value: {shown}: {path} in body should be greater than or "
                f"equal to {schema['minimum']}"
            )
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(
                f"{path}: Invalid value: {shown}: {path} in body should be less than or "
                f"equal to {schema['maximum']}"
            )
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: Invalid value: should have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items"
            )
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                _walk(item, schema["items"], f"{path}[{i}]", errors)
    if isinstance(value, dict):
        _walk_object(value, schema, path, errors)
    if before == len(errors):  # CEL rules run only on values that passed the schema
        for rule in schema.get("x-kubernetes-validations", []):
            if not _cel(rule["rule"], value):
                message = " ".join(
                    str(rule.get("message") or f"failed rule: {rule['rule']}").split()
                )
                errors.append(f"{path or '<root>'}: Invalid value: {message}")


def validate(obj: Any) -> dict[str, Any]:
    """Check a whole ModelDeployment object and return it with schema defaults applied.

    Raises :class:`ValidationError` listing every problem found, as the API server would.
    """
    if not isinstance(obj, dict):
        raise ValidationError("?", ["the document is not a mapping (expected a ModelDeployment)"])
    name = str((obj.get("metadata") or {}).get("name") or "?")
    errors: list[str] = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        errors.append(
            f"apiVersion/kind: expected {API_VERSION} {KIND}, got "
            f"{obj.get('apiVersion')!r} {obj.get('kind')!r}"
        )
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        errors.append("metadata.name: Required value: name is required")
    if errors:
        raise ValidationError(name, errors)
    schema = openapi_schema()
    defaulted: dict[str, Any] = default(obj, schema)
    # The schema leaves `metadata` open; the API server checks it with its own rules.
    checked = {k: v for k, v in defaulted.items() if k not in ("metadata", "status")}
    checked["metadata"] = {"name": metadata["name"]}  # type: ignore[index]
    _walk(checked, schema, "", errors)
    if errors:
        raise ValidationError(name, errors)
    return defaulted
