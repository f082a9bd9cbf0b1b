"""The gateway's OpenAPI document, completed: every operation lists the error statuses it can
answer (the tus routes come from a library that lists none), and the ids a create returns are
linked to the operations that take them, so that clients and fuzzers can follow them."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

# Statuses any operation may answer besides its own: bad input, auth, missing, state,
# size, media type, validation, per-key limits, the store or backend unavailable.
# 405: the tus routes honour X-HTTP-Method-Override, which may name a method the path lacks.
COMMON_ERRORS = ("400", "401", "404", "405", "409", "412", "413", "415", "422", "429", "503")
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
# (method, path) of a create -> the operations its answer's ``id`` names.
LINKS = {
    ("post", "/v1/jobs"): ("202", "job_id", (
        ("get", "/v1/jobs/{job_id}"), ("get", "/v1/jobs/{job_id}/events"),
        ("get", "/v1/jobs/{job_id}/result"), ("post", "/v1/jobs/{job_id}/revisions"),
        ("delete", "/v1/jobs/{job_id}"))),
}  # fmt: skip


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)  # fmt: skip
            complete(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def complete(schema: dict) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    })  # fmt: skip
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for status in COMMON_ERRORS:
                if status == "422" and "422" in responses:
                    responses["422"] = _error(responses["422"].get("description", "invalid"))
                responses.setdefault(status, _error("an error: {code, message}"))
            # A request the HTTP server itself cannot parse (a malformed Content-Length)
            # is answered by uvicorn in plain text, before the application sees it.
            responses["400"].setdefault("content", {})["text/plain"] = {
                "schema": {"type": "string"}
            }
            if path.startswith("/v1/uploads") and method == "options":
                responses.setdefault("200", {"description": "tus capabilities"})
    for (method, path), (status, parameter, targets) in LINKS.items():
        operation = schema["paths"].get(path, {}).get(method)
        if operation is None:
            continue
        links = {}
        for target_method, target_path in targets:
            target = schema["paths"].get(target_path, {}).get(target_method)
            if target and "operationId" in target:
                links[target["operationId"]] = {
                    "operationId": target["operationId"],
                    "parameters": {parameter: "$response.body#/id"},
                }
        operation["responses"].setdefault(status, {"description": "created"})["links"] = links


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": ERROR_SCHEMA}}}  # fmt: skip
