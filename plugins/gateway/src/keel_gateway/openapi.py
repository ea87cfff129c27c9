"""OpenAPI plumbing: runnables' JSON schemas hoisted into components, and the SSE event schema.

A runnable's input and output schemas arrive as JSON schemas with their own ``$defs``; OpenAPI
wants them under ``components/schemas`` with unique names, so each is renamed
``<Runnable><Input|Output><Def>`` and every ``$ref`` rewritten.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from keel import ProductEvent

__all__ = ["SSE_EVENT", "camel", "hoist", "install", "start_route_docs"]

#: one server-sent event (OpenAPI 3.1: the schema of a text/event-stream response describes each event)
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data", "event"],
    "properties": {
        "event": {
            "type": "string",
            "enum": [
                "task.started",
                "task.progress",
                "task.partial",
                "task.waiting",
                "task.completed",
                "task.failed",
                "reconnect",
            ],
            "description": "a product event's type; 'reconnect' (no id) ends a stream cut by a shutdown",
        },
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the product event's seq"},
        "retry": {"type": "integer"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/ProductEvent"},
        },
    },
}


def hoist(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """Move a JSON schema's ``$defs`` into OpenAPI components (named ``<prefix><Def>``), rewriting refs."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", None) or schema.pop("definitions", None) or {}
    renamed = {name: f"{prefix}{name}" for name in defs}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                for marker in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(marker) and ref[len(marker) :] in renamed:
                        node = {**node, "$ref": f"#/components/schemas/{renamed[ref[len(marker) :]]}"}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, body in defs.items():
        components[renamed[name]] = rewrite(body)
    return rewrite(schema)  # type: ignore[no-any-return]


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").replace(".", "_").split("_") if part)


def start_route_docs(
    name: str, input_schema: dict[str, Any], output_schema: dict[str, Any], extra: dict[str, Any]
) -> tuple[dict[int | str, dict[str, Any]], dict[str, Any]]:
    """The documented responses and request body of runnable ``name``'s start route; its schemas
    (and ``<Name>Result``) go into ``extra``, the components :func:`install` adds."""
    from keel_gateway.schemas import ERRORS, ExecutionView

    prefix = camel(name)
    inputs = hoist(input_schema, f"{prefix}Input", extra)
    outputs = hoist(output_schema, f"{prefix}Output", extra)
    extra[f"{prefix}Result"] = {
        "title": f"{prefix}Result",
        "description": f"an execution of {name!r} that has finished; output matches its output schema",
        "allOf": [
            {"$ref": "#/components/schemas/ExecutionView"},
            {"type": "object", "properties": {"output": {"anyOf": [outputs, {"type": "null"}]}}},
        ],
    }
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "with wait=true: finished",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{prefix}Result"}}},
        },
        202: {"model": ExecutionView, "description": "started (or, with wait=true, waiting or still running)"},
        **ERRORS,
    }
    body = {
        "requestBody": {
            "required": True,
            "description": f"the input of {name!r}",
            "content": {"application/json": {"schema": inputs}},
        }
    }
    return responses, body


def install(app: FastAPI, extra: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Set ``app.openapi`` to build the schema once, with ``extra`` components and ``ProductEvent``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(extra)
            components["ProductEvent"] = hoist(ProductEvent.model_json_schema(), "ProductEvent", components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return openapi
