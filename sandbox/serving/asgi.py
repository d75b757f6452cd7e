"""ASGI pieces the model server and the A/B router share: the body limit, JSON answers and the headers the router
sets on what it forwards."""

from __future__ import annotations

import hmac
import json
import zlib
from typing import Any

import orjson
from starlette.responses import Response

from sandbox.wire import HEALTH_PATHS, MAX_BODY_BYTES, SERVING_TOKEN_ENV, PayloadError

# Set by the A/B router on the requests it forwards and on its answers; the model server logs each inference with
# them (the inference log).
VARIANT_HEADER = "x-model-variant"
REQUEST_ID_HEADER = "x-request-id"


# The addresses a server bound to loopback is known by; another Host header is a page in a browser that resolved
# some other name to 127.0.0.1 (DNS rebinding). MLflow refuses such a Host with 403 too.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
LOOPBACK_BINDS = frozenset({"127.0.0.1", "localhost", "::1"})
UNAUTHORIZED = (
    f"this server requires a bearer token: send Authorization: Bearer ${SERVING_TOKEN_ENV} "
    "(`sandbox env` exports it; `sandbox serve url NAME --token` prints it)"
)


def serving_token(environ) -> str | None:
    """The bearer token a server requires, from its environment at start (None: it answers anyone)."""
    return environ.get(SERVING_TOKEN_ENV) or None


def loopback_port(host: str, port: int) -> int | None:
    """The port to hold the Host header to when the server binds ``host`` (loopback); None: no Host check."""
    return port if host in LOOPBACK_BINDS else None


class ServingGuard:
    """Who may call a model server or router: a Host header naming the loopback address (when the server is bound
    to loopback on ``local_port``: else 403) and `Authorization: Bearer TOKEN` (when there is a ``token``: else
    401 with `WWW-Authenticate: Bearer`). The health paths (`wire.HEALTH_PATHS`) answer anyone; so does every path
    without a token and a port. One pass over the headers per request, nothing allocated on the way through."""

    def __init__(self, app, *, token: str | None = None, local_port: int | None = None):
        self.app = app
        self.token = token.encode() if token else None
        self.hosts = (
            frozenset(name.encode() + suffix for name in LOOPBACK_NAMES for suffix in (b"", f":{local_port}".encode()))
            if local_port is not None
            else None
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        host = authorization = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
            elif key == b"authorization":
                authorization = value
        if self.hosts is not None and (host is None or (host not in self.hosts and host.lower() not in self.hosts)):
            shown = host.decode("latin-1")[:80] if host is not None else "none"
            refusal = f"Host {shown!r} is not this server's loopback address; call it as 127.0.0.1 or localhost"
            await error(403, refusal)(scope, receive, send)
            return
        if self.token is not None and not _bearer_matches(authorization, self.token):
            await error(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def guarded(app, *, token: str | None = None, local_port: int | None = None):
    """``app`` behind a `ServingGuard`, or ``app`` itself when there is nothing to check."""
    return ServingGuard(app, token=token, local_port=local_port) if token or local_port is not None else app


def _bearer_matches(authorization: bytes | None, token: bytes) -> bool:
    if authorization is None or authorization[:7].lower() != b"bearer ":
        return False
    return hmac.compare_digest(authorization[7:].strip(), token)


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413, counting the bytes actually read, and decode a gzip or deflate
    `Content-Encoding` (what tritonclient's request compression sends) for the app.

    A Content-Length over the limit is refused before reading; a chunked body
    (no Content-Length) or one whose header lies is counted as it arrives. A
    compressed body is decompressed as it arrives, and the limit holds for the
    decompressed bytes too, so a zip bomb is a 413 without ever being expanded
    whole. Another encoding is a 415. The app sees the plain body, without the
    Content-Encoding header, and reads it once more from memory.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        encoding = "identity"
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await too_large(self.limit)(scope, receive, send)
                    return
            elif key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        decoder = _decoder(encoding)
        if decoder is None:
            refusal = f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or an uncompressed body"
            await error(415, refusal)(scope, receive, send)
            return
        chunks, size, plain_size = [], 0, 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limit:
                    await too_large(self.limit)(scope, receive, send)
                    return
                if decoder is not _IDENTITY:
                    # At most one byte past the limit: enough to know it is over, never the whole expansion.
                    chunk = decoder.decompress(chunk, self.limit + 1 - plain_size)
                    plain_size += len(chunk)
                    if plain_size > self.limit or decoder.unconsumed_tail:
                        await too_large(self.limit, "decompressed ")(scope, receive, send)
                        return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            if decoder is not _IDENTITY and (not decoder.eof or decoder.unused_data):
                raise zlib.error("the compressed stream ends early" if not decoder.eof else "bytes follow its end")
        except zlib.error as exc:
            await error(400, f"the body is not valid {encoding} data ({exc}); compress it whole")(scope, receive, send)
            return
        body = b"".join(chunks)
        if decoder is not _IDENTITY:
            scope = dict(scope)
            scope["headers"] = [
                (key, value) for key, value in scope["headers"] if key not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode())]
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_IDENTITY = object()


def _decoder(encoding: str):
    """A streaming decompressor for `encoding`, _IDENTITY for none, or None when it is not one we decode."""
    if encoding in ("identity", ""):
        return _IDENTITY
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()  # zlib-wrapped, as HTTP's deflate is (and what tritonclient sends)
    return None


def too_large(limit: int, which: str = "") -> Response:
    return error(413, f"the {which}request body is over {limit} bytes; send fewer rows per request")


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
