"""kill -9 under inference traffic: every answered row is in the inference log once, none lost, none twice.

Clients send requests with unique ids (REST V1, REST V2 and gRPC, into a micro-batching server) and keep a
ledger: each request sent, with its row count, and each one answered 200 / OK. Then components of the stack
are SIGKILLed (the model server, PostgreSQL, or both in either order) while traffic runs; the supervisor
brings the stack back by itself (no `sandbox up`) while the clients keep sending; and once the server's
journal is shipped the table is compared with the ledger: every answered request has exactly its rows; a
request that was never answered (in flight at the kill) may have its rows or none, never more.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import psutil
import psycopg
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from sandbox.serving.inference_log import JOURNAL_DIR
from sandbox.serving.journal import unshipped_rows
from tests.faults import recovery
from tests.stacks import Stack, local_pid

pytestmark = pytest.mark.integration

DEPLOYMENT = "durable"
PROTOCOLS = ("v1", "v2", "grpc")


@pytest.fixture(scope="module")
def deployed(faults_stack: Stack) -> Iterator[Stack]:
    faults_stack.cli(
        "serve",
        "deploy",
        DEPLOYMENT,
        "--model",
        "models:/fraud-detector/1",
        "--batch-size",
        "16",
        "--batch-wait-ms",
        "3",
    )
    yield faults_stack
    faults_stack.running().cli("serve", "undeploy", DEPLOYMENT, check=False)  # the scratch stack goes on


@pytest.fixture
def stack(deployed: Stack) -> Stack:
    """The module's stack, running (a test before killed parts of it and brought it back; this makes sure)."""
    return deployed.running()


class Traffic:
    """Clients on each protocol, sending until stopped; the ledger of what was sent and what was answered."""

    def __init__(self, stack: Stack, prefix: str, *, tag: str = "", clients_per_protocol: int = 2):
        endpoints = stack.endpoints()
        self.endpoint = endpoints.inference[DEPLOYMENT]
        self.auth = endpoints.serving_headers()  # the serving token: HTTP header, and gRPC metadata
        self.metadata = tuple((key.lower(), value) for key, value in self.auth.items())
        self.prefix = prefix  # the test's: its rows in the table are those whose request id starts with it
        self.tag = tag
        self.sent: dict[str, int] = {}  # request id -> rows
        self.answered: dict[str, int] = {}
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(protocol, index), daemon=True)
            for protocol in PROTOCOLS
            for index in range(clients_per_protocol)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self._threads), "a client did not stop"

    def answered_count(self) -> int:
        with self._lock:
            return len(self.answered)

    def wait_answered(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.answered_count() < count:
            assert time.monotonic() < deadline, f"only {self.answered_count()} of {count} requests answered"
            time.sleep(0.05)

    def _client(self, protocol: str, index: int) -> None:
        rng = random.Random(f"{protocol}-{index}")
        http = httpx.Client(timeout=10, trust_env=False, headers=self.auth)
        with http, grpc.insecure_channel(self.endpoint.grpc) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            number = 0
            while not self._stop.is_set():
                rows = [[round(rng.gauss(0, 1), 4) for _ in range(8)] for _ in range(rng.randint(1, 3))]
                request_id = f"{self.prefix}-{self.tag}{protocol}-{index}-{number}"
                number += 1
                with self._lock:
                    self.sent[request_id] = len(rows)
                try:
                    ok = self._send(http, stub, protocol, request_id, rows)
                except (httpx.HTTPError, grpc.RpcError):
                    ok = False
                with self._lock:
                    if ok:
                        self.answered[request_id] = len(rows)
                    else:
                        self.failures += 1
                if not ok:
                    time.sleep(0.05)  # the server is down: do not spin

    def _send(self, http: httpx.Client, stub, protocol: str, request_id: str, rows: list) -> bool:
        if protocol == "grpc":
            request = pb.ModelInferRequest(model_name=DEPLOYMENT, id=request_id)
            tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), 8])
            tensor.contents.fp64_contents.extend(value for row in rows for value in row)
            response = stub.ModelInfer(request, timeout=10, metadata=self.metadata)
            return len(response.outputs) == 1
        headers = {"x-request-id": request_id}
        if protocol == "v1":
            response = http.post(self.endpoint.v1_predict, json={"instances": rows}, headers=headers)
            return response.status_code == 200 and len(response.json()["predictions"]) == len(rows)
        tensor = {
            "name": "input-0",
            "shape": [len(rows), 8],
            "datatype": "FP64",
            "data": [v for row in rows for v in row],
        }
        response = http.post(self.endpoint.v2_infer, json={"inputs": [tensor]}, headers=headers)
        return response.status_code == 200 and response.json()["outputs"][0]["shape"][0] == len(rows)


def _server_pid(stack: Stack) -> int:
    return next(local_pid(d) for d in stack.status()["deployments"] if d["name"] == DEPLOYMENT)


def _kill_9(pid: int, *, group: bool = False) -> None:
    """SIGKILL (the whole process group for PostgreSQL: the postmaster and its backends), then wait until gone."""
    processes = [psutil.Process(pid)]
    if group:
        processes = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
        os.killpg(pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"{alive} survived SIGKILL"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _kill(stack: Stack, component: str) -> None:
    if component == "server":
        _kill_9(_server_pid(stack))
    else:
        _kill_9(stack.pids()["postgres"], group=True)


def _logged(stack: Stack, prefix: str) -> dict[str, int]:
    """Rows in the table per request id of this test's traffic."""
    with psycopg.connect(stack.endpoints().monitoring_db_url) as conn:
        return dict(
            conn.execute(
                "SELECT request_id, count(*) FROM inference_log WHERE deployment = %s AND request_id LIKE %s "
                "GROUP BY request_id",
                (DEPLOYMENT, prefix + "-%"),
            ).fetchall()
        )


def _wait_shipped(stack: Stack, prefix: str, expected_rows: int, timeout: float = 120) -> dict[str, int]:
    """The table's rows once the server's journal holds nothing unshipped and every answered row could be in."""
    journal = stack.dir / "deployments" / DEPLOYMENT / JOURNAL_DIR
    deadline = time.monotonic() + timeout
    while True:
        logged = _logged(stack, prefix)
        if unshipped_rows(journal) == 0 and sum(logged.values()) >= expected_rows:
            return logged
        if time.monotonic() > deadline:
            return logged  # compared by the caller: its assertion names what is missing
        time.sleep(0.25)


@pytest.mark.parametrize(
    "kills",
    [("server",), ("postgres",), ("postgres", "server"), ("server", "postgres")],
    ids=["server", "postgres", "postgres-then-server", "server-then-postgres"],
)
def test_kill_9_under_traffic_loses_no_answered_row_and_writes_none_twice(stack, kills, ledger):
    prefix = uuid.uuid4().hex[:10]
    with Traffic(stack, prefix) as traffic:
        traffic.wait_answered(200)
        journaled_while_postgres_away = False
        for done, component in enumerate(kills):
            if not done:
                first_kill = time.monotonic()
            _kill(stack, component)
            if component == "postgres" and "server" not in kills[:done]:
                # The server answers, and journals, while PostgreSQL is away.
                traffic.wait_answered(traffic.answered_count() + 200)
                journaled_while_postgres_away = True
            else:
                time.sleep(1.0)  # clients keep sending, and are refused
        # No `sandbox up`: the supervisor brings back what was killed (PostgreSQL before the server needing it).
        recovery.wait_for(
            lambda: recovery.settled(stack.status()), "the killed components back, by the supervisor", stack
        )
    assert len(traffic.answered) >= 200 + 200 * journaled_while_postgres_away
    assert traffic.failures > 0 or "server" not in kills  # the server was down while clients sent

    sent, answered = dict(traffic.sent), dict(traffic.answered)
    if kills == ("postgres",):
        # The server kept running: its shipper reconnects by itself. More traffic after the restart, too.
        with Traffic(stack, prefix, tag="after-") as after:
            after.wait_answered(100)
        sent |= after.sent
        answered |= after.answered
    logged = _wait_shipped(stack, prefix, sum(answered.values()))
    recovery_s = time.monotonic() - first_kill

    lost = {rid: (rows, logged.get(rid, 0)) for rid, rows in answered.items() if logged.get(rid, 0) != rows}
    unknown = set(logged) - set(sent)
    doubled = {rid: count for rid, count in logged.items() if rid in sent and count > sent[rid]}
    # A request in flight at the kill was journaled whole before its answer, or not at all.
    partial = {rid: count for rid, count in logged.items() if rid in sent and count != sent[rid]}
    ledger.add(
        f"kill -9 {' then '.join(kills)} under inference traffic",
        faults=len(kills),
        acknowledged=sum(answered.values()),
        lost=sum(max(0, rows - logged.get(rid, 0)) for rid, rows in answered.items()),
        duplicates=sum(count - sent[rid] for rid, count in doubled.items()),
        recovery_s=recovery_s,
        recovered="by itself; the journal shipped",
    )
    assert not lost, (
        f"{len(lost)} answered request(s) without exactly their rows (sent, logged): {list(lost.items())[:5]}"
    )
    assert not unknown, f"rows of requests never sent: {sorted(unknown)[:5]}"
    assert not doubled, f"rows logged twice: {list(doubled.items())[:5]}"
    assert not partial, f"requests with some of their rows: {partial}"

    journal = stack.dir / "deployments" / DEPLOYMENT / JOURNAL_DIR
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in journal.iterdir())
    assert len(list(journal.glob("*.journal"))) <= 2  # shipped segments are deleted
