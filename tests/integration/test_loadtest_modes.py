"""Open loop against a stalling server, Locust's distributed mode, and `loadtests/` under plain Locust.

No sandbox stack: the target is `benchmarks.stub_server`, a trivial V1 server on
127.0.0.1 written for these tests, started and stopped here. The figures these
runs print (open-loop p99 against the stall, the closed-loop p99 that misses
it) are measured side by side by `benchmarks/coordinated_omission.py`; the
tests assert only lower bounds a deliberate stall guarantees.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.loadtest import distributed_processes

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
STALL_S = 1.0


def _sandbox(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.fixture
def stub(request):
    """A stub server; parametrize indirectly with (stall every S s, for T s), or nothing for no stalls."""
    stall_every, stall_for = getattr(request, "param", (0.0, 0.0))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.stub_server",
            "--stall-every",
            str(stall_every),
            "--stall-for",
            str(stall_for),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        port = int(proc.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/v1/models/stub:predict"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("stub", [(2.0, STALL_S)], indirect=True)
def test_open_loop_p99_shows_a_stall_that_closed_loop_users_wait_out(stub, tmp_path):
    # --max-late 100: a generator descheduled on a busy machine sends late, which only adds latency; the
    # assertions below are lower bounds, so a late send cannot make them pass.
    opened = _sandbox(
        "loadtest",
        stub,
        "--rate",
        "200",
        "--duration",
        "6s",
        "--processes",
        "2",
        "--max-late",
        "100",
        "--report",
        str(tmp_path / "open"),
    )
    assert opened.returncode == 0, opened.stdout + opened.stderr
    open_summary = json.loads((tmp_path / "open" / "summary.json").read_text())
    closed = _sandbox("loadtest", stub, "--users", "4", "--duration", "6s", "--report", str(tmp_path / "closed"))
    assert closed.returncode == 0, closed.stdout + closed.stderr
    closed_summary = json.loads((tmp_path / "closed" / "summary.json").read_text())
    print(
        f"stall {STALL_S * 1000:.0f} ms: open-loop p99 {open_summary['p99_ms']:.0f} ms, "
        f"closed-loop p99 {closed_summary['p99_ms']:.0f} ms"
    )

    assert open_summary["mode"] == "open" and open_summary["processes"] == 2
    assert open_summary["failures"] == 0
    # 1200 arrivals scheduled between two processes, every one answered and counted once in the merged histogram.
    assert open_summary["requests"] == 1200 == open_summary["latency_histogram"]["total"]
    parts = [json.loads((tmp_path / "open" / f"openloop-part{k}.json").read_text()) for k in (0, 1)]
    assert [p["scheduled"] for p in parts] == [600, 600]
    # A third of the time is stalled: well over 1% of requests wait out most of a stall, measured from schedule.
    assert open_summary["p99_ms"] >= 0.9 * STALL_S * 1000
    assert open_summary["max_ms"] >= STALL_S * 1000 * 0.95
    # The closed-loop users met the stall too (their slowest request waited it out) ...
    assert closed_summary["max_ms"] >= 0.9 * STALL_S * 1000
    # ... and the report says which mode measured what.
    assert "latency from the scheduled send time" in (tmp_path / "open" / "summary.html").read_text()


def test_locust_workers_join_a_master_and_their_stats_merge(stub, tmp_path):
    folder = tmp_path / "master"
    with distributed_processes(stub, users=4, duration=3, folder=folder, output=subprocess.PIPE) as (master, workers):
        output, _ = master.communicate(timeout=120)
        assert master.returncode == 0, output
        assert [w.wait(30) for w in workers] == [0, 0]  # the master's quit ends its workers
    distributed = json.loads((tmp_path / "master" / "summary.json").read_text())
    assert distributed["workers"] == 2 and distributed["requests"] > 0 and distributed["failures"] == 0
    assert distributed["by_name"]["v1 predict"]["requests"] == distributed["requests"]

    local = _sandbox(
        "loadtest", stub, "--users", "4", "--duration", "4s", "--processes", "2", "--report", str(tmp_path / "p2")
    )
    assert local.returncode == 0, local.stdout + local.stderr
    processes = json.loads((tmp_path / "p2" / "summary.json").read_text())
    assert processes["workers"] == 2 and processes["requests"] > 0 and processes["failures"] == 0


def test_loadtests_users_runs_under_plain_locust(stub, tmp_path):
    host = stub.split("/v1/")[0]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "locust", "-f", "loadtests/users.py", "--host", host, "--headless"),
            *("-u", "2", "-r", "2", "-t", "3s", "--only-summary", "--csv", str(tmp_path / "plain")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "LOADTEST_MODEL": "stub", "LOADTEST_WIDTH": "8"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = (tmp_path / "plain_stats.csv").read_text().splitlines()
    row = next(line.split(",") for line in stats if line.startswith("POST,v1 predict,"))
    assert int(row[2]) > 0 and int(row[3]) == 0  # requests, failures


def test_an_unanswering_open_loop_target_fails_every_request_and_the_gate(tmp_path):
    from sandbox.loadtest import LoadTestOptions, Target, run
    from sandbox.loadtest.shapes import constant

    with socket.socket() as listener:  # listening, never answering: every request times out
        listener.bind(("127.0.0.1", 0))
        listener.listen(1000)
        target = Target(f"http://127.0.0.1:{listener.getsockname()[1]}", "x", "v1", "silent")
        options = LoadTestOptions(
            rows=[[1.0, 2.0]], rate_profile=constant(20, 2), duration_s=2, timeout_s=1, slo="error_rate<1%"
        )
        summary = run(target, options, tmp_path / "r")
    assert summary["requests"] == 40 and summary["failures"] == 40
    assert set(summary["errors"]) <= {"timeout", "timeout waiting for a connection"}
    assert summary["passed"] is False and summary["slo"][0]["passed"] is False
