"""The OpenAPI 3.1 document, generated from the route table and the pydantic bodies."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from plasmacloud.iam.http_util import Route

_ERROR = {"$ref": "#/components/schemas/Error"}


def openapi_document(routes: Sequence[Route], version: str) -> dict[str, Any]:
    """Describe every route: path parameters, body schema, required action, errors."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    }
    for r in routes:
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": f"{r.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', r.path.lower())}",
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "bad request", "content": _json(_ERROR)},
            },
        }
        params = re.findall(r"{(\w+)}", r.path)
        if r.paginated:
            params_spec = [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}},
                {"name": "page_token", "in": "query", "schema": {"type": "string"}},
            ]
        else:
            params_spec = []
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ] + params_spec
        if r.action:
            op["security"] = [{"bearer": []}]
            op["x-required-action"] = r.action
            op["responses"]["401"] = {"description": "no or bad token", "content": _json(_ERROR)}
            op["responses"]["403"] = {"description": "policy denies", "content": _json(_ERROR)}
        if r.body is not None:
            name = r.body.__name__
            schema = r.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
            op["requestBody"] = {
                "required": True,
                "content": _json({"$ref": f"#/components/schemas/{name}"}),
            }
            op["responses"]["422"] = {"description": "invalid body", "content": _json(_ERROR)}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "PlasmaCloud IAM", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
