"""The OpenAPI 3.1 document of the JSON API, served at ``/openapi.json``.

It is also what requests are checked against: :func:`check` validates a
JSON body with the document's own schema (JSON Schema 2020-12, as OpenAPI 3.1
uses), so the document and the validation cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

PAYLOAD = {
    "description": "Bytes: {\"text\": ...} when they are UTF-8, else {\"base64\": ...}.",
    "oneOf": [
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
         "additionalProperties": False},
        {"type": "object", "properties": {"base64": {"type": "string", "contentEncoding": "base64"}},
         "required": ["base64"], "additionalProperties": False},
    ],
}

SCHEMAS: dict[str, Any] = {
    "Payload": PAYLOAD,
    "SubmitRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["function"],
        "properties": {
            "function": {"type": "string", "minLength": 1, "maxLength": 4096},
            "payload": {"description": "the workload: a string (sent as UTF-8) or a Payload object",
                        "anyOf": [{"type": "string"}, {"$ref": "#/components/schemas/Payload"}]},
            "unique": {"type": "string", "maxLength": 64,
                       "description": "unique key; jobs with the same key and function coalesce"},
            "priority": {"enum": ["high", "normal", "low"], "default": "normal"},
            "mode": {"enum": ["background", "wait", "foreground"], "default": "background",
                     "description": "background: answer with the handle at once; wait: submit in the "
                                    "background and answer with the result when the job ends (it runs on "
                                    "if the request times out or goes away); foreground: a foreground "
                                    "job, abandoned if the request times out or goes away"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400,
                        "description": "seconds to wait (wait and foreground modes; default 60)"},
        },
    },
    "Submitted": {
        "type": "object",
        "required": ["handle", "state"],
        "properties": {"handle": {"type": "string"}, "state": {"type": "string"}},
    },
    "Job": {
        "type": "object",
        "description": "A job the server knows: live, or the kept result of an ended one "
                       "(docs/protocol-extensions.md)",
        "required": ["handle", "function", "unique", "state", "result", "data", "warnings", "numerator",
                     "denominator", "submitted_at", "finished_at", "attempts", "attempt_started_at",
                     "truncated", "truncated_bytes", "background", "priority"],
        "properties": {
            "handle": {"type": "string"},
            "function": {"type": "string"},
            "unique": {"type": "string"},
            "state": {"enum": ["queued", "scheduled", "running", "completed", "failed", "exception",
                               "cancelled"]},
            "result": {"$ref": "#/components/schemas/Payload"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Payload"}},
            "warnings": {"type": "array", "items": {"$ref": "#/components/schemas/Payload"}},
            "numerator": {"type": "integer"},
            "denominator": {"type": "integer"},
            "submitted_at": {"type": ["number", "null"]},
            "finished_at": {"type": ["number", "null"]},
            "attempts": {"type": "integer"},
            "attempt_started_at": {"type": "array", "items": {"type": "number"}},
            "truncated": {"type": "boolean"},
            "truncated_bytes": {"type": "integer"},
            "background": {"type": "boolean"},
            "priority": {"enum": ["high", "normal", "low"]},
        },
    },
    "Function": {
        "type": "object",
        "required": ["name", "total", "queued", "scheduled", "running", "workers"],
        "properties": {
            "name": {"type": "string"},
            "total": {"type": "integer", "description": "queued + scheduled + running (admin status)"},
            "queued": {"type": "object",
                       "properties": {p: {"type": "integer"} for p in ("high", "normal", "low")}},
            "scheduled": {"type": "integer"},
            "running": {"type": "integer"},
            "workers": {"type": "integer"},
            "submitted": {"type": "integer", "description": "jobs created since start"},
            "completed": {"type": "integer"},
            "failed": {"type": "integer", "description": "failed, exception or cancelled, since start"},
        },
    },
    "Worker": {
        "type": "object",
        "required": ["id", "host", "client_id", "functions", "running"],
        "properties": {
            "id": {"type": "integer"},
            "fd": {"type": "integer"},
            "host": {"type": "string"},
            "client_id": {"type": "string"},
            "functions": {"type": "array", "items": {"type": "string"}},
            "running": {"type": "array", "items": {"type": "string"}, "description": "handles"},
            "sleeping": {"type": "boolean"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"},
                       "details": {"type": "array", "items": {"type": "string"}}},
    },
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("Error")}


_HANDLE = {"name": "handle", "in": "path", "required": True, "schema": {"type": "string"}}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {}]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "geartrain",
        "version": "1",
        "description": "Submit Gearman jobs, follow them and read their kept results over HTTP. "
                       "Mutating operations need `Authorization: Bearer TOKEN` when the server runs "
                       "with --http-token-file. gearmand's own HTTP protocol (POST /FUNCTION with "
                       "X-Gearman-* headers) is served on the same port; see docs/http.md.",
    },
    "paths": {
        "/api/jobs": {
            "post": {
                "summary": "Submit a job",
                "security": _BEARER,
                "requestBody": {"required": True, "content": _json("SubmitRequest")},
                "responses": {
                    "202": {"description": "background: accepted", "content": _json("Submitted")},
                    "200": {"description": "wait/foreground: the job ended", "content": _json("Job")},
                    "400": _error("the body is not a valid SubmitRequest"),
                    "401": _error("a token is required"),
                    "503": _error("the server refused the job (queue full, store unavailable, "
                                  "shutting down)"),
                    "504": _error("foreground: the job did not end in time (it was abandoned)"),
                },
            },
            "get": {
                "summary": "Find a job by unique key",
                "parameters": [
                    {"name": "unique", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "function", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "the live job, else the latest kept result",
                                      "content": _json("Job")},
                              "400": _error("no unique given"), "404": _error("no such job")},
            },
        },
        "/api/jobs/{handle}": {
            "parameters": [_HANDLE],
            "get": {
                "summary": "A job by handle: live, or its kept result",
                "responses": {"200": {"description": "the job", "content": _json("Job")},
                              "404": _error("no such job (or its result expired)")},
            },
            "delete": {
                "summary": "Cancel a job (as the admin `cancel job`)",
                "security": _BEARER,
                "responses": {"200": {"description": "cancelled", "content": _json("Submitted")},
                              "401": _error("a token is required"), "404": _error("no such live job")},
            },
        },
        "/api/jobs/{handle}/cancel": {
            "parameters": [_HANDLE],
            "post": {
                "summary": "Cancel a job (for clients that cannot send DELETE)",
                "security": _BEARER,
                "responses": {"200": {"description": "cancelled", "content": _json("Submitted")},
                              "401": _error("a token is required"), "404": _error("no such live job")},
            },
        },
        "/api/functions": {
            "get": {"summary": "Functions with their queues, running jobs and workers",
                    "responses": {"200": {"description": "every function",
                                          "content": {"application/json": {"schema": {
                                              "type": "array",
                                              "items": {"$ref": "#/components/schemas/Function"}}}}}}},
        },
        "/api/workers": {
            "get": {"summary": "Connected workers and what each runs",
                    "responses": {"200": {"description": "every worker connection",
                                          "content": {"application/json": {"schema": {
                                              "type": "array",
                                              "items": {"$ref": "#/components/schemas/Worker"}}}}}}},
        },
        "/api/server": {
            "get": {"summary": "Version, uptime, store, connections and totals",
                    "responses": {"200": {"description": "server information",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}}},
        },
        "/api/events": {
            "get": {"summary": "Server-sent events: first a `history` (jobs ended so far per function, "
                               "once a second over the last two minutes), then a `snapshot` "
                               "(functions, workers, totals) every second",
                    "responses": {"200": {"description": "text/event-stream",
                                          "content": {"text/event-stream": {"schema": {"type": "string"}}}}}},
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text format 0.0.4",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}}}},
        },
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}

_VALIDATORS: dict[str, Draft202012Validator] = {}


def check(schema: str, document: Any) -> list[str]:
    """What is wrong with *document* as a *schema* (empty: nothing)."""
    validator = _VALIDATORS.get(schema)
    if validator is None:
        root = {"$ref": f"#/components/schemas/{schema}", "components": {"schemas": SCHEMAS}}
        validator = _VALIDATORS[schema] = Draft202012Validator(root)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [(("/".join(str(p) for p in e.absolute_path) + ": ") if e.absolute_path else "") + e.message
            for e in errors]
