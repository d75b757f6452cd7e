"""A/B router: one KServe-style URL in front of several model servers, split by weight.

    python -m sandbox.serving.router --name NAME --port P \\
        --variant a=http://127.0.0.1:PA/NAME-a:80 --variant b=http://127.0.0.1:PB/NAME-b:20 \\
        [--sticky-header x-user-id]

The arguments are sandbox.serving.launch's `RouterArgs`, which whoever starts the router writes (`to_argv()`).

Requests to `/v1/models/NAME:predict` and `/v2/models/NAME/infer` go to one
variant, chosen at random by weight, or by a hash of the sticky header's value
so one user always sees the same variant, with their headers and body intact
(the V2 binary tensor extension included); metadata and health paths of both
protocols answer for the split. Bodies over 8 MiB are a 413, chunked or not. V2 answers name the split, never a
variant; the response carries the variant's name in `x-model-variant` and an `x-request-id`; both are also sent
on to the variant's model server, which logs every inference with them. `/metrics` counts requests and
latencies per variant. The feedback path, `POST /feedback` with the request id
and the true labels, scores each variant's predictions; `GET /feedback` gives
per-variant accuracy for an A/B comparison.

With `ML_SANDBOX_SERVING_TOKEN` set at start, every path but the health checks needs `Authorization: Bearer
TOKEN` (401 otherwise), and the router sends the same token to its variants, which run with it; bound to
loopback, a foreign Host header is a 403 (`asgi.ServingGuard`, as on the model server).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import os
import random
import time
import uuid
from collections import OrderedDict

import httpx
import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.serving.asgi import (
    REQUEST_ID_HEADER,
    VARIANT_HEADER,
    BodyLimit,
    error,
    guarded,
    json_response,
    loopback_port,
    serving_token,
)
from sandbox.serving.launch import RouterArgs, RouteVariant
from sandbox.wire import bearer_headers

# Predictions kept for the feedback path: enough for a long A/B test, bounded so memory is too.
MAX_REMEMBERED = 200_000
# Headers that belong to one hop (RFC 9110 7.6.1) or that httpx sets from the body it sends.
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
    | {"content-length", "content-encoding"}
)
# Headers of the variant's answer that the router's own server sets again: copied, the client would get two of each.
SERVER_HEADERS = frozenset({"date", "server"})
BINARY_HEADER = "inference-header-content-length"


class VariantPicker:
    """Weighted choice; with a key, the same key always gets the same variant."""

    def __init__(self, variants: list[RouteVariant], *, rng: random.Random | None = None):
        if not variants:
            raise ValueError("at least one variant is needed")
        if any(v.weight < 0 for v in variants) or sum(v.weight for v in variants) <= 0:
            raise ValueError("weights must be non-negative and add up to more than 0")
        self.variants = variants
        total = sum(v.weight for v in variants)
        self._bounds: list[float] = []
        running = 0.0
        for variant in variants:
            running += variant.weight / total
            self._bounds.append(running)
        self._rng = rng or random.Random()

    def pick(self, key: str | None = None) -> RouteVariant:
        if key is None:
            point = self._rng.random()
        else:
            digest = hashlib.sha256(key.encode()).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64
        index = min(bisect.bisect_right(self._bounds, point), len(self.variants) - 1)
        return self.variants[index]


def create_app(
    name: str,
    variants: list[RouteVariant],
    sticky_header: str | None = None,
    *,
    token: str | None = None,
    local_port: int | None = None,
):
    """The router's ASGI app; ``token`` and ``local_port`` as the model server's (`asgi.ServingGuard`): the
    token is also what it sends its variants, which run with the same one."""
    picker = VariantPicker(variants)
    registry = CollectorRegistry()
    requests_total = Counter(
        "ab_router_requests_total",
        "Requests routed, by variant and status code",
        ["variant", "code"],
        registry=registry,
    )
    latency = Histogram(
        "ab_router_request_duration_seconds",
        "Latency seen by the router, by variant",
        ["variant"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    )
    feedback_total = Counter(
        "ab_router_feedback_total",
        "Ground-truth labels received, by variant and whether the prediction was right",
        ["variant", "correct"],
        registry=registry,
    )
    remembered: OrderedDict[str, tuple[str, list]] = OrderedDict()
    quality: dict[str, dict[str, int]] = {v.label: {"labelled": 0, "correct": 0} for v in variants}
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=2.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        headers=bearer_headers(token),  # on every call to a variant: readiness and metadata too
        trust_env=False,
    )
    variant_auth = bearer_headers(token).get("Authorization")

    def _unknown(model: str) -> Response:
        return error(404, f"model {model!r} is not served here; this router serves {name!r}")

    async def forward(request: Request, model: str, path_for, *, v2: bool = False) -> Response:
        if model != name:
            return _unknown(model)
        body = await request.body()  # held to the body limit by BodyLimit, chunked or not
        key = request.headers.get(sticky_header) if sticky_header else None
        variant = picker.pick(key)
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        headers = {k: v for k, v in request.headers.items() if k not in HOP_HEADERS}
        headers[REQUEST_ID_HEADER] = request_id
        if variant_auth is not None:
            headers["authorization"] = variant_auth  # the router's own, whatever the client sent
        # The variant's model server logs each inference with it (the inference log).
        headers[VARIANT_HEADER] = variant.label
        started = time.perf_counter()
        try:
            upstream = await client.post(
                f"{variant.base_url}{path_for(variant.model_name)}", content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            requests_total.labels(variant.label, "503").inc()
            return error(
                503, f"variant {variant.label!r} is unavailable: {type(exc).__name__}", {VARIANT_HEADER: variant.label}
            )
        latency.labels(variant.label).observe(time.perf_counter() - started)
        requests_total.labels(variant.label, str(upstream.status_code)).inc()
        if upstream.status_code == 200:
            _remember(request_id, variant.label, upstream.content)
        answer_headers = {k: v for k, v in upstream.headers.items() if k not in HOP_HEADERS | SERVER_HEADERS}
        answer_headers.update({VARIANT_HEADER: variant.label, REQUEST_ID_HEADER: request_id})
        content = upstream.content
        if v2 and upstream.status_code == 200:
            content = _as_split(content, answer_headers)
        return Response(content, status_code=upstream.status_code, headers=answer_headers)

    def _as_split(body: bytes, headers: dict[str, str]) -> bytes:
        """A V2 answer under the split's name (the variant's is in `x-model-variant`); with the binary extension,
        the JSON header is rewritten and its length header follows, the tensor bytes after it untouched."""
        length = headers.get(BINARY_HEADER)
        if length is not None and not (length.isdigit() and int(length) <= len(body)):
            return body  # not a header this router can rewrite safely: pass it on as the variant sent it
        cut = int(length) if length is not None else len(body)
        try:
            payload = orjson.loads(body[:cut])
        except orjson.JSONDecodeError:
            return body
        if not isinstance(payload, dict) or "model_name" not in payload:
            return body
        payload["model_name"] = name
        header = orjson.dumps(payload)
        if length is not None:
            headers[BINARY_HEADER] = str(len(header))
        return header + body[cut:]

    def _remember(request_id: str, label: str, body: bytes) -> None:
        if not body.startswith(b"{"):
            return
        try:
            payload = json.loads(body)
            predictions = payload["predictions"] if "predictions" in payload else payload["outputs"][0]["data"]
        except (ValueError, KeyError, IndexError, TypeError):
            return
        remembered[request_id] = (label, predictions)
        if len(remembered) > MAX_REMEMBERED:
            remembered.popitem(last=False)

    async def feedback(request: Request) -> Response:
        """Ground truth for an answered request: `{"request_id": ..., "labels": [...]}` (or `"label"`)."""
        try:
            body = json.loads(await request.body())
            request_id = body["request_id"]
            labels = body["labels"] if "labels" in body else [body["label"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            return JSONResponse({"error": 'send {"request_id": "...", "labels": [...]} as JSON'}, 400)
        if not isinstance(labels, list) or not isinstance(request_id, str):
            return JSONResponse({"error": '"labels" must be a list and "request_id" a string'}, 400)
        known = remembered.pop(request_id, None)
        if known is None:
            return JSONResponse({"error": f"unknown or already labelled request_id {request_id!r}"}, 404)
        label, predictions = known
        if len(labels) != len(predictions):
            return JSONResponse({"error": f"{len(labels)} labels for {len(predictions)} predictions"}, 400)
        for predicted, actual in zip(predictions, labels, strict=True):
            correct = predicted == actual
            quality[label]["labelled"] += 1
            quality[label]["correct"] += int(correct)
            feedback_total.labels(label, str(correct).lower()).inc()
        return JSONResponse({"variant": label, "labelled": len(labels)})

    async def feedback_stats(request: Request) -> Response:
        return JSONResponse(
            {
                "variants": {
                    label: {
                        **counts,
                        "accuracy": counts["correct"] / counts["labelled"] if counts["labelled"] else None,
                    }
                    for label, counts in quality.items()
                }
            }
        )

    async def v1_predict(request: Request) -> Response:
        model, _, verb = request.path_params["target"].partition(":")
        if verb != "predict":
            return JSONResponse({"error": f"unsupported verb {verb!r}; use :predict"}, 404)
        return await forward(request, model, lambda m: f"/v1/models/{m}:predict")

    async def v2_infer(request: Request) -> Response:
        return await forward(request, request.path_params["model"], lambda m: f"/v2/models/{m}/infer", v2=True)

    async def v2_version_infer(request: Request) -> Response:
        version = request.path_params["version"]
        model = request.path_params["model"]
        return await forward(request, model, lambda m: f"/v2/models/{m}/versions/{version}/infer", v2=True)

    async def variants_ready() -> bool:
        async def one(variant: RouteVariant) -> bool:
            try:
                response = await client.get(f"{variant.base_url}/v2/models/{variant.model_name}/ready")
                return response.status_code == 200
            except httpx.HTTPError:
                return False

        return all(await asyncio.gather(*(one(v) for v in variants)))

    async def model_ready(request: Request) -> Response:
        model = request.path_params.get("model") or request.path_params["target"]
        if model != name:
            return _unknown(model)
        ready = await variants_ready()
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)

    async def model_metadata(request: Request) -> Response:
        """V2 metadata of the first variant, under the split's name (variants share a signature)."""
        model = request.path_params["model"]
        if model != name:
            return _unknown(model)
        first = variants[0]
        try:
            upstream = await client.get(f"{first.base_url}/v2/models/{first.model_name}")
            payload = upstream.json()
        except (httpx.HTTPError, ValueError) as exc:
            return error(503, f"variant {first.label!r} is unavailable: {type(exc).__name__}")
        if isinstance(payload, dict) and upstream.status_code == 200:
            payload["name"] = name
            payload.setdefault("parameters", {})["variants"] = [v.label for v in variants]
        return json_response(payload, upstream.status_code)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "ml-sandbox-ab-router", "version": "1", "extensions": ["binary_tensor_data"]})

    async def v1_models(request: Request) -> Response:
        return json_response({"models": [name]})

    async def server_ready(request: Request) -> Response:
        ready = await variants_ready()
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def describe(request: Request) -> Response:
        return JSONResponse(
            {
                "name": name,
                "sticky_header": sticky_header,
                "variants": [{"label": v.label, "model": v.model_name, "weight": v.weight} for v in variants],
            }
        )

    routes = [
        Route("/v1/models", v1_models, methods=["GET"]),
        Route("/v1/models/{target:path}", v1_predict, methods=["POST"]),
        Route("/v1/models/{target}", model_ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", v2_version_infer, methods=["POST"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/router", describe, methods=["GET"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/feedback", feedback_stats, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    return guarded(BodyLimit(Starlette(routes=routes, lifespan=lifespan)), token=token, local_port=local_port)


def main(argv: list[str] | None = None) -> None:
    run(RouterArgs.parse(argv))


def run(args: RouterArgs) -> None:
    """Serve the split until SIGINT or SIGTERM."""
    sticky_header = args.sticky_header.lower() if args.sticky_header else None
    app = create_app(
        args.name,
        list(args.variants),
        sticky_header,
        token=serving_token(os.environ),
        local_port=loopback_port(args.host, args.port),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
