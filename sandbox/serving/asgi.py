"""ASGI pieces the model server and the A/B router share: the body limit, JSON answers and the headers the router
sets on what it forwards."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import Response

from sandbox.wire import MAX_BODY_BYTES, PayloadError

# Set by the A/B router on the requests it forwards and on its answers; the model server logs each inference with
# them (the inference log).
VARIANT_HEADER = "x-model-variant"
REQUEST_ID_HEADER = "x-request-id"


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413, counting the bytes actually read.

    A Content-Length over the limit is refused before reading; a chunked body
    (no Content-Length) or one whose header lies is counted as it arrives. The
    body read here is handed on to the app, which reads it once more from memory.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await too_large(self.limit)(scope, receive, send)
                    return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def too_large(limit: int) -> Response:
    return error(413, f"the request body is over {limit} bytes; send fewer rows per request")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # ensure_ascii: a message quoting the client's text may hold lone surrogates.
    body = json.dumps({"error": message}, ensure_ascii=True).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def parse_json(body: bytes) -> Any:
    """A JSON body; NaN, Infinity and 1e400 parse (as floats) so validation can name where they are."""
    if not body.strip():
        raise PayloadError("the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # orjson refuses NaN, Infinity, numbers beyond float64 and lone surrogates: the slower parser says where
    try:
        return json.loads(body)
    except RecursionError:
        raise PayloadError("the JSON body is nested too deeply") from None
    except UnicodeDecodeError:
        raise PayloadError("the body is not UTF-8 text; send JSON") from None
    except ValueError as exc:
        raise PayloadError(f"the body is not JSON ({exc})") from None
