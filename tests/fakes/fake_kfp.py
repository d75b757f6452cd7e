"""A FAKE Kubeflow Pipelines API server for the unit tests: it answers, it runs nothing.

It speaks the few REST calls of KFP's v2beta1 API that `kfp.Client` (SDK 2.17) makes to create a
run from a package and follow it: `GET /apis/v2beta1/healthz`, `GET` and `POST /apis/v2beta1/experiments`,
`POST /apis/v2beta1/runs` (the pipeline spec inline), `GET /apis/v2beta1/runs/{id}` and
`POST /apis/v2beta1/runs/{id}:terminate`. Every request is recorded (method, path, JSON body). A run
answers RUNNING to its first `polls_running` reads, then whatever the test set in ``final``: its
`state`, `error`, and `run_details.task_details` (as KFP's JSON: display_name, state, pod_name,
error). ``on_create`` sees each submitted body (a test stands in for the steps there); with
``refuse_runs`` run creation answers an error instead. `FakeKfp` is an `http.server` on 127.0.0.1 in a
thread of the test process, started and stopped by the test's fixture.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeKfp:
    port: int = 0
    polls_running: int = 1
    final: dict[str, Any] = field(default_factory=lambda: {"state": "SUCCEEDED"})
    requests: list[Request] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_create: Callable[[dict[str, Any]], None] | None = None  # called with each submitted run's body
    refuse_runs: tuple[int, str] | None = None  # `POST /runs` answers this status and message instead

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._polls: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kfp", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKfp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def created_runs(self) -> list[dict[str, Any]]:
        """The bodies of every `POST /runs`: what the client submitted."""
        return [r.body for r in self.requests if r.method == "POST" and r.path == f"{PREFIX}/runs"]

    # ------------------------------------------------------------------ answers

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Request(method, path, query, body))
            if path == f"{PREFIX}/healthz" and method == "GET":
                return 200, {"multi_user": False, "pipeline_store": "database"}
            if path == f"{PREFIX}/experiments":
                return self._experiments(method, query, body)
            if path == f"{PREFIX}/runs" and method == "POST" and self.refuse_runs:
                status, message = self.refuse_runs
                return status, {"error": message, "code": 3, "message": message}
            if path == f"{PREFIX}/runs" and method == "POST":
                run_id = str(uuid.uuid4())
                run = {**body, "run_id": run_id, "state": "PENDING", "created_at": "2026-11-27T10:00:00Z"}
                self.runs[run_id] = run
                self._polls[run_id] = 0
                if self.on_create is not None:
                    self.on_create(body)
                return 200, run
            if path.startswith(f"{PREFIX}/runs/"):
                run_id, _, verb = path[len(f"{PREFIX}/runs/") :].partition(":")
                run = self.runs.get(run_id)
                if run is None:
                    return 404, {"error": f"run {run_id} not found", "code": 5, "message": "NotFound"}
                if method == "POST" and verb == "terminate":
                    run["terminated"] = True
                    return 200, {}
                if method == "GET" and not verb:
                    self._polls[run_id] += 1
                    if run.get("terminated"):
                        return 200, {**run, "state": "CANCELED"}
                    if self._polls[run_id] <= self.polls_running:
                        return 200, {**run, "state": "RUNNING"}
                    return 200, {**run, **self.final}
            return 404, {"error": f"FAKE KFP: no route for {method} {path}", "code": 5}

    def _experiments(self, method: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "POST":
            experiment = {**body, "experiment_id": str(uuid.uuid4()), "storage_state": "AVAILABLE"}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        wanted = None
        for predicate in json.loads((query.get("filter") or ["{}"])[0]).get("predicates", []):
            if predicate.get("key") == "display_name":
                wanted = predicate.get("string_value", predicate.get("stringValue"))
        found = [e for e in self.experiments.values() if wanted is None or e.get("display_name") == wanted]
        return 200, ({"experiments": found, "total_size": len(found)} if found else {})


def _handler(fake: FakeKfp):
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.answer(method, parts.path, parse_qs(parts.query), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def log_message(self, *args) -> None:
            pass

    return Handler
