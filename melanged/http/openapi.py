"""The OpenAPI 3.1 document, generated from the declaration (melange.operations).

Each remote operation's path, method, parameters (with their kinds, bounds and
whether they are required), request body, success response and problem
responses come from its `Operation` and its core function's signature; nothing
here is written per operation. Host-local operations are absent.
"""

from __future__ import annotations

import typing
from typing import Any

from melange import __version__, paging
from melange import params as declared
from melange.operations import OPERATIONS, Operation
from melanged.http import problems

BODY_METHODS = ("POST", "PATCH")
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
_KINDS: dict[type, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    list: {"type": "array", "items": {"type": "string"}},
}


def kind_schema(parameter: declared.Parameter, *, nullable: bool = False) -> dict[str, Any]:
    """A parameter's JSON schema: its kind, an integer's bounds, null when it may be."""
    schema = dict(_KINDS[parameter.kind])
    if parameter.kind is int:
        schema.update(minimum=parameter.bounds.low, maximum=parameter.bounds.high)
    if nullable and parameter.nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def _parameter(where: str, parameter: declared.Parameter) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": parameter.name,
        "in": where,
        "required": where == "path" or parameter.required,
        "schema": kind_schema(parameter),
    }
    if parameter.kind is list:
        entry.update(style="form", explode=True)
    return entry


def _page_parameters() -> list[dict[str, Any]]:
    return [
        {"name": "limit", "in": "query", "required": False,
         "description": f"Items per page (at most {paging.MAX_LIMIT}).",
         "schema": {"type": "integer", "minimum": 1, "maximum": paging.MAX_LIMIT,
                    "default": paging.DEFAULT_LIMIT}},
        {"name": "after", "in": "query", "required": False,
         "description": "The cursor of the page to read: from the previous page's `next`.",
         "schema": {"type": "string"}},
    ]  # fmt: skip


def client_parameters(operation: Operation) -> dict[str, declared.Parameter]:
    """What a client sends an operation over HTTP: a paged list's own `limit` is the page's."""
    found = operation.parameters()
    if operation.http is not None and operation.http.paged:
        found = {k: v for k, v in found.items() if k not in ("limit", "after")}
    return found


def _request_body(operation: Operation, in_path: tuple[str, ...]) -> dict[str, Any] | None:
    body = {k: p for k, p in client_parameters(operation).items() if k not in in_path}
    if not body:
        return None
    schema = {
        "type": "object",
        "properties": {k: kind_schema(p, nullable=True) for k, p in body.items()},
        "additionalProperties": False,
    }
    required = sorted(k for k, p in body.items() if p.required)
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def _result_schema(operation: Operation) -> dict[str, Any]:
    """The success body's schema, from the core function's return hint."""
    assert operation.http is not None
    if operation.http.media != "application/json":
        return {"type": "string"}
    if operation.http.paged:
        return {
            "type": "object",
            "required": ["items", "next"],
            "properties": {"items": {"type": "array"}, "next": {"type": ["string", "null"]}},
        }
    hint = declared.type_hints(operation.function()).get("return")
    origin = typing.get_origin(hint) or hint
    shapes: dict[Any, dict[str, Any]] = {list: {"type": "array"}, dict: {"type": "object"}}
    return shapes.get(origin, {})


def _responses(operation: Operation) -> dict[str, Any]:
    assert operation.http is not None
    problem = {"content": {problems.PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    responses: dict[str, Any] = {
        str(operation.http.status): {
            "description": operation.summary,
            "content": {operation.http.media: {"schema": _result_schema(operation)}},
        }
    }
    for status in problems.ERROR_STATUSES:
        responses[str(status)] = {"description": problems.TITLES[status], **problem}
    return responses


def path_of(route: str) -> str:
    """A route's OpenAPI path: `{block:path}` is `{block}` there."""
    import re

    return re.sub(r"{(\w+):\w+}", r"{\1}", route)


def operation_object(name: str, operation: Operation) -> dict[str, Any]:
    """The OpenAPI operation object of one declared operation."""
    http = operation.http
    assert http is not None
    in_path = http.path_params()
    declared_params = client_parameters(operation)
    parameters = [_parameter("path", declared_params[key]) for key in in_path]
    if http.method not in BODY_METHODS:
        parameters += [_parameter("query", p) for k, p in declared_params.items()
                       if k not in in_path]  # fmt: skip
    if http.paged:
        parameters += _page_parameters()
    entry: dict[str, Any] = {
        "operationId": name.replace(".", "_"),
        "summary": operation.summary,
        "tags": [name.split(".")[0]],
        "security": SECURITY,
        "parameters": parameters,
        "responses": _responses(operation),
    }
    body = _request_body(operation, in_path) if http.method in BODY_METHODS else None
    if body is not None:
        entry["requestBody"] = body
    if name == STREAMED_IMPORT:
        _add_streamed_body(entry, declared_params)
    return entry


STREAMED_IMPORT = "import"  # its body may be the file itself (melanged.http.upload)
STREAMED_MEDIA = ("text/plain", "text/csv", "application/x-ndjson")


def _add_streamed_body(entry: dict[str, Any], declared_params: dict[str, Any]) -> None:
    """The import's other form: the file as the body, of any media type but JSON, read
    as it arrives; its `format` and `source` then come in the query string (with a JSON
    body they are members of it, and a query string is refused)."""
    for media in STREAMED_MEDIA:
        entry["requestBody"]["content"][media] = {"schema": {"type": "string"}}
    for key in ("format", "source"):
        parameter = _parameter("query", declared_params[key])
        parameter["description"] = f"The import's {key}, when the body is the file itself."
        entry["parameters"].append(parameter)


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of the API."""
    paths: dict[str, dict[str, Any]] = {"/v1/health": {"get": _health()}}
    for name, operation in OPERATIONS.items():
        if operation.http is None:
            continue
        path = paths.setdefault(path_of(operation.http.path), {})
        path[operation.http.method.lower()] = operation_object(name, operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "melange", "version": __version__,
                 "description": "IP address management: the Melange API."},
        "paths": paths,
        "components": {
            "schemas": {"Problem": problems.schema()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }  # fmt: skip


def _health() -> dict[str, Any]:
    return {
        "operationId": "health",
        "summary": "Whether the server answers (no token needed).",
        "tags": ["health"],
        "security": [],
        "responses": {"200": {"description": "The server answers.", "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["status", "version"],
                "properties": {"status": {"type": "string"}, "version": {"type": "string"}},
            }}}}},
    }  # fmt: skip
