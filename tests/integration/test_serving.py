"""Serving, A/B routing and load tests on the real stack: KServe model servers, the router, Locust.

The deployments a test uses come from fixtures (`fraud`, `fraud_ab`), which deploy
them when they are not there, so each test runs alone or in any order.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest

from sandbox.errors import ExitCode
from sandbox.serving.reference_model import synthetic_data
from tests.stacks import local_pid

pytestmark = pytest.mark.integration


def _deployments(stack) -> dict:
    return {d["name"]: d for d in stack.status()["deployments"]}


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return str(getattr(address, "ipv4_mapped", None) or address) == "127.0.0.1"


def _inference(stack, name: str) -> dict:
    return stack.status()["endpoints"]["inference"][name]


def _http(stack) -> httpx.Client:
    """A client of the stack's model servers and routers: with the serving token, as `sandbox env` hands it over."""
    return httpx.Client(timeout=30, headers=stack.endpoints().serving_headers())


def _running(stack, *names: str) -> bool:
    deployments = _deployments(stack)
    return all(name in deployments and deployments[name]["state"] == "running" for name in names)


DEPLOY_FRAUD = "serve deploy fraud --model models:/fraud-detector/1 --batch-size 32 --batch-wait-ms 2".split()


@pytest.fixture(scope="module")
def _fraud_deploy(_platform):
    """`serve deploy fraud`, once per module: what the command printed."""
    return _platform.running().with_reference_model(2).cli(*DEPLOY_FRAUD)


@pytest.fixture
def fraud(platform, _fraud_deploy):
    """`fraud` serves v1 of the reference model (micro-batched); deployed again if a test removed it."""
    fraud = _deployments(platform).get("fraud")
    # Other modules on the platform stack deploy a `fraud` of their own (a user's, by alias): this one is v1.
    if not fraud or fraud["state"] != "running" or fraud["model_uri"] != "models:/fraud-detector/1":
        platform.cli(*DEPLOY_FRAUD)
    return _fraud_deploy


@pytest.fixture
def fraud_ab(platform):
    """`fraud-ab`: an 80/20 split of v1 and v2, sticky on x-user-id; split again if a test removed it."""
    if not _running(platform, "fraud-ab", "fraud-ab-a", "fraud-ab-b"):
        platform.cli(
            "serve",
            "split",
            "fraud-ab",
            "--variant",
            "a=models:/fraud-detector/1:80",
            "--variant",
            "b=models:/fraud-detector/2:20",
            "--sticky-header",
            "x-user-id",
        )
    return "fraud-ab"


# Malformed requests, each as (protocol, content-type, body). None of them may get a 5xx.
MALFORMED = [
    ("v1", "application/json", b'{"instances": [[1,2,3]]}'),
    ("v1", "application/json", b'{"instances": [["a",0,0,0,0,0,0,0]]}'),
    ("v1", "application/json", b'{"instances": []}'),
    ("v1", "application/json", b"{}"),
    ("v1", "application/json", b""),
    ("v1", "application/json", b"not json"),
    ("v1", "text/plain", b"not json"),
    ("v1", None, b"\xff\xfe\x00"),
    ("v1", "application/json", b"[1,2]"),
    ("v1", "application/json", b'{"instances": "x"}'),
    ("v1", "application/json", b'{"instances": [{"f0": 1}]}'),
    ("v1", "application/json", b'{"instances": [[null,0,0,0,0,0,0,0]]}'),
    ("v1", "application/json", b'{"instances": [[true,0,0,0,0,0,0,0]]}'),
    ("v1", "application/json", b'{"instances": [[1e400,0,0,0,0,0,0,0]]}'),
    ("v2", "application/json", b'{"inputs": []}'),
    ("v2", "application/json", b"{}"),
    ("v2", "application/json", b""),
    ("v2", "application/json", b"garbage"),
    ("v2", "application/json", b'{"inputs": [{"name":"x","shape":[1,8],"datatype":"BYTES","data":["a"]}]}'),
    ("v2", "application/json", b'{"inputs": [{"name":"x","shape":[1,8],"datatype":"FP64","data":[1,2]}]}'),
    ("v2", "application/json", b'{"inputs": [{"name":"x","shape":[1,3],"datatype":"FP64","data":[1,2,3]}]}'),
    (
        "v2",
        "application/json",
        b'{"inputs": [{"name":"x","shape":[1,8],"datatype":"FP64","data":["a",1,1,1,1,1,1,1]}]}',
    ),
    ("v2", "application/json", b'{"inputs": [{"name":"x","shape":"bad","datatype":"FP64","data":[1]}]}'),
    ("v2", "application/json", b'{"inputs": [{"name":"x","shape":[-1,8],"datatype":"FP64","data":[1]}]}'),
    ("v2", "application/json", b'{"inputs": [{"name":"x","datatype":"FP64","data":[1]}]}'),
    (
        "v2",
        "application/json",
        b'{"inputs": [{"name":"x","shape":[1,8],"datatype":"INT8","data":[1000,1,1,1,1,1,1,1]}]}',
    ),
    ("v2", "application/json", b'{"inputs": "x"}'),
    ("v2", "application/json", b"[1]"),
    ("v2", "text/plain", b"hello"),
    ("v2", "application/json", b'{"id": 5, "inputs": []}'),
    ("v1", "application/json", json.dumps({"instances": [[0.0] * 8] * 20_000}).encode()),  # too many rows
    ("v1", "application/json", b" " * (9 * 1024 * 1024)),  # over the body limit
]


def test_deploy_serves_the_registered_model_on_both_protocols(platform, fraud):
    assert "V2: POST" in fraud.stderr  # what `serve deploy` printed
    deployment = _deployments(platform)["fraud"]
    assert deployment["state"] == "running"
    endpoint = _inference(platform, "fraud")
    base = endpoint["url"]

    import mlflow

    mlflow.set_tracking_uri(platform.endpoints().mlflow_tracking_uri)
    frame, _ = synthetic_data(rows=20, seed=7)
    expected = mlflow.pyfunc.load_model("models:/fraud-detector/1").predict(frame).tolist()

    http = _http(platform)
    refused = httpx.post(endpoint["v1_predict"], json={"instances": [[0.5] * 8]})  # no token: `serving.auth: token`
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "ML_SANDBOX_SERVING_TOKEN" in refused.json()["error"]
    rebound = http.post(endpoint["v1_predict"], json={"instances": [[0.5] * 8]}, headers={"Host": "rebound.example"})
    assert rebound.status_code == 403  # a foreign Host header (DNS rebinding), as MLflow refuses it
    v1 = http.post(endpoint["v1_predict"], json={"instances": frame.to_numpy().tolist()})
    assert v1.status_code == 200 and v1.json()["predictions"] == expected
    tensor = {"name": "input-0", "shape": [20, 8], "datatype": "FP64", "data": frame.to_numpy().ravel().tolist()}
    v2 = http.post(endpoint["v2_infer"], json={"inputs": [tensor]})
    assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == expected
    by_name = http.post(endpoint["v1_predict"], json={"instances": frame.to_dict(orient="records")})
    assert by_name.json()["predictions"] == expected

    assert httpx.get(f"{base}/v2/health/ready").status_code == 200  # a health path: no token needed
    assert http.get(f"{base}/v2/models/fraud/ready").status_code == 200
    assert http.get(f"{base}/v1/models/fraud").json()["ready"] is True
    inputs = http.get(f"{base}/v2/models/fraud").json()["inputs"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in inputs] == [(f"f{n}", "FP64", [-1]) for n in range(8)]
    assert 'model_server_requests_total{code="200",protocol="v1"}' in http.get(f"{base}/metrics").text
    assert http.post(f"{base}/v1/models/nope:predict", json={"instances": [[0] * 8]}).status_code == 404

    pid = local_pid(deployment)
    listening = [c for c in psutil.net_connections(kind="inet") if c.pid == pid and c.status == psutil.CONN_LISTEN]
    # REST and gRPC; gRPC's socket is dual-stack, so its address may read as the v4-mapped ::ffff:127.0.0.1.
    assert len({c.laddr.port for c in listening}) == 2
    assert all(_loopback(c.laddr.ip) for c in listening), [c.laddr for c in listening]


def test_a_thousand_malformed_requests_get_4xx_and_the_server_stays_healthy(platform, fraud):
    endpoint = _inference(platform, "fraud")
    statuses = Counter()
    cases = itertools.islice(itertools.cycle(MALFORMED), 1000)
    with _http(platform) as client:
        for protocol, content_type, body in cases:
            url = endpoint["v1_predict"] if protocol == "v1" else endpoint["v2_infer"]
            headers = {"content-type": content_type} if content_type else {}
            response = client.post(url, content=body, headers=headers)
            statuses[response.status_code] += 1
            assert 400 <= response.status_code < 500, (protocol, body[:80], response.status_code, response.text)
            assert response.json()  # a JSON error that says what is wrong
    assert sum(statuses.values()) == 1000
    good = _http(platform).post(endpoint["v1_predict"], json={"instances": [[0.5] * 8]})
    assert good.status_code == 200 and len(good.json()["predictions"]) == 1
    assert httpx.get(f"{endpoint['url']}/v2/health/ready").status_code == 200


def test_an_80_20_split_routes_by_weight_and_names_the_variant(platform, fraud_ab):
    endpoint = _inference(platform, fraud_ab)
    assert endpoint["kind"] == "split" and endpoint["variants"] == ["a", "b"]
    rows = np.random.default_rng(3).normal(size=(2000, 8)).round(3).tolist()

    def call(row):
        response = client.post(endpoint["v1_predict"], json={"instances": [row]})
        return response.status_code, response.headers.get("x-model-variant")

    auth = platform.endpoints().serving_headers()
    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=8), headers=auth)
    with client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, rows))
        sticky = {
            client.post(endpoint["v1_predict"], json={"instances": [rows[0]]}, headers={"x-user-id": "u-7"}).headers[
                "x-model-variant"
            ]
            for _ in range(20)
        }
    assert all(code == 200 for code, _ in results)
    assert all(variant in ("a", "b") for _, variant in results)  # every response names its variant
    share_a = sum(variant == "a" for _, variant in results) / len(results)
    assert abs(share_a - 0.80) <= 0.03, share_a
    assert len(sticky) == 1

    assert httpx.get(f"{endpoint['url']}/metrics").status_code == 401  # the router requires the token too
    metrics = httpx.get(f"{endpoint['url']}/metrics", headers=auth).text
    assert 'ab_router_requests_total{code="200",variant="a"}' in metrics
    assert 'ab_router_request_duration_seconds_count{variant="b"}' in metrics


def test_loadtest_with_an_impossible_slo_fails_and_says_which(platform, fraud, tmp_path):
    report = tmp_path / "impossible"
    result = platform.cli(
        "loadtest",
        "fraud",
        "--users",
        "4",
        "--duration",
        "4s",
        "--slo",
        "p95<0.001ms,error_rate<1%",
        "--report",
        str(report),
        check=False,
    )
    assert result.returncode == ExitCode.SLO_FAILED, result.stderr
    assert "FAIL" in result.stdout and "p95<0.001ms" in result.stdout
    summary = json.loads((report / "summary.json").read_text())
    verdicts = {v["objective"]: v["passed"] for v in summary["slo"]}
    assert verdicts == {"p95<0.001ms": False, "error_rate<1%": True}
    assert summary["passed"] is False and summary["requests"] > 0
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_report.html", "chart.png", "summary.html"):
        assert (report / name).stat().st_size > 0, name
    assert "FAILED" in (report / "summary.html").read_text()


def test_loadtest_with_a_satisfiable_slo_passes(platform, fraud, tmp_path):
    report = tmp_path / "fine"
    result = platform.cli(
        "loadtest",
        "fraud",
        "--users",
        "4",
        "--duration",
        "4s",
        "--protocol",
        "v2",
        "--slo",
        "p99<5s,error_rate<1%,rps>1",
        "--report",
        str(report),
    )
    summary = json.loads((report / "summary.json").read_text())
    assert summary["passed"] and summary["failures"] == 0 and summary["protocol"] == "v2"
    assert "PASSED" in result.stderr
    # The same run as a baseline for itself passes; a baseline ten times faster fails.
    faster = {
        **summary,
        "p50_ms": summary["p50_ms"] / 10,
        "p95_ms": summary["p95_ms"] / 10,
        "p99_ms": summary["p99_ms"] / 10,
        "rps": summary["rps"] * 10,
    }
    (tmp_path / "fast.json").write_text(json.dumps(faster))
    regressed = platform.cli(
        "loadtest",
        "fraud",
        "--users",
        "4",
        "--duration",
        "3s",
        "--baseline",
        str(tmp_path / "fast.json"),
        "--report",
        str(tmp_path / "vs-fast"),
        check=False,
    )
    assert regressed.returncode == ExitCode.SLO_FAILED
    assert "vs baseline" in regressed.stdout


def test_loadtest_through_the_ab_router_counts_each_variant(platform, fraud_ab, tmp_path):
    platform.cli("loadtest", fraud_ab, "--users", "4", "--duration", "4s", "--report", str(tmp_path / "ab"))
    summary = json.loads((tmp_path / "ab" / "summary.json").read_text())
    assert {"variant a", "variant b"} <= set(summary["by_name"])
    assert summary["failures"] == 0


def test_find_capacity_brackets_the_rate_the_slo_allows_and_charts_the_curve(platform, fraud, tmp_path):
    # The search's mechanics on the real server: steps, bisection, repeats, the report. Whether the rate found
    # holds on yet another run and breaks 20% higher is a timing figure: benchmarks/loadtest.py prints it.
    # A latency limit well above the unloaded p99 puts the knee where the server saturates.
    slo = "p99<300ms,error_rate<0.1%"
    report = tmp_path / "capacity"
    search = platform.cli(
        "loadtest",
        "fraud",
        "--find-capacity",
        "--slo",
        slo,
        "--start-rate",
        "200",
        "--duration",
        "3s",
        "--precision",
        "20",
        "--confirm-runs",
        "3",
        "--report",
        str(report),
        check=False,
    )
    summary = json.loads((report / "summary.json").read_text())
    capacity = summary["capacity"]
    print(search.stderr[-3000:])
    assert search.returncode == 0, search.stdout + search.stderr
    held, broke = capacity["held_rps"], capacity["broke_rps"]
    assert capacity["confirmed"] and capacity["stopped"] is None
    runs = {rate: [s["passed"] for s in capacity["steps"] if s["rate"] == rate] for rate in (held, broke)}
    assert len(runs[held]) >= 3 and all(runs[held]) and not all(runs[broke])  # held every time, 3 times at least
    assert held > 0 and held < broke <= held * 1.2 + 0.01
    for step in capacity["steps"]:  # every verdict is the SLO's, applied to that step's own figures
        assert step["passed"] == (step["valid"] and step["p99_ms"] < 300 and step["error_rate"] < 0.1), step
    assert [p["rate"] for p in capacity["curve"]] == sorted({s["rate"] for s in capacity["steps"]})
    assert {"p50_ms", "p99_ms", "error_rate", "passed"} <= set(capacity["curve"][0])
    assert (report / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "summary.html").read_text()
    assert 'alt="latency percentiles against the arrival rate"' in page
    assert page.count("data:image/png;base64,") == 2  # the capacity curve and the held run's timeline
    assert f"{held:g} req/s" in search.stdout


def test_deployments_survive_down_and_up(platform, fraud):
    before = _inference(platform, "fraud")
    pids = [local_pid(d) for d in _deployments(platform).values() if d["instance"]]
    platform.cli("down")
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    assert {d["state"] for d in _deployments(platform).values()} == {"stopped"}

    result = platform.cli("up")
    assert "Model deployments" in result.stderr
    assert {d["state"] for d in _deployments(platform).values()} == {"running"}
    after = _inference(platform, "fraud")
    assert after["v1_predict"] == before["v1_predict"]  # same URL after a restart
    assert _http(platform).post(after["v1_predict"], json={"instances": [[0.1] * 8]}).status_code == 200


def test_bad_deploys_are_refused_clearly(platform):
    missing = platform.cli("serve", "deploy", "ghost", "--model", "models:/no-such-model/1", check=False)
    assert missing.returncode == ExitCode.USAGE and "not in the registry" in missing.stderr
    missing_version = platform.cli("serve", "deploy", "ghost", "--model", "models:/fraud-detector/99", check=False)
    assert missing_version.returncode == ExitCode.USAGE and "not in the registry" in missing_version.stderr
    bad_name = platform.cli("serve", "deploy", "Bad_Name", "--model", "models:/fraud-detector/1", check=False)
    assert bad_name.returncode == ExitCode.USAGE and "DNS label" in bad_name.stderr
    bad_variant = platform.cli("serve", "split", "x", "--variant", "a=models:/fraud-detector/1", check=False)
    assert bad_variant.returncode == ExitCode.USAGE and "LABEL=MODEL_URI:WEIGHT" in bad_variant.stderr
    assert "ghost" not in _deployments(platform)


def test_gpu_deployments_are_placed_and_limited_by_quota(platform):
    placed = platform.cli("serve", "deploy", "fraud-gpu", "--model", "models:/fraud-detector/1", "--gpus", "2")
    try:
        assert "GPUs 0,1 on gpu-a100" in placed.stderr
        pid = local_pid(_deployments(platform)["fraud-gpu"])
        assert psutil.Process(pid).environ()["CUDA_VISIBLE_DEVICES"] == "0,1"
        snapshot = json.loads(platform.cli("gpu", "status", "--json").stdout)
        assert [(w["name"], w["phase"], w["node"], w["devices"]) for w in snapshot["workloads"]] == [
            ("serve-fraud-gpu", "Running", "gpu-a100", [0, 1])
        ]
        a100 = next(n for n in snapshot["nodes"] if n["name"] == "gpu-a100")
        assert a100["gpus_used"] == 2
        quota = next(q for q in snapshot["quotas"] if q["name"] == "compute-quota")
        assert quota["used"]["requests.nvidia.com/gpu"] == "2"
        refused = platform.cli(
            "serve", "deploy", "fraud-gpus", "--model", "models:/fraud-detector/1", "--gpus", "3", check=False
        )
        assert refused.returncode != 0
        assert "exceeded quota: compute-quota, requested: requests.nvidia.com/gpu=3" in refused.stderr
        assert "fraud-gpus" not in _deployments(platform)
    finally:
        platform.cli("serve", "undeploy", "fraud-gpu")
    assert json.loads(platform.cli("gpu", "status", "--json").stdout)["workloads"] == []


def test_undeploy_stops_the_split_and_its_variants(platform, fraud_ab):
    before = _deployments(platform)
    pids = {n: local_pid(d) for n, d in before.items() if n.startswith(fraud_ab)}
    assert set(pids) == {"fraud-ab", "fraud-ab-a", "fraud-ab-b"}
    platform.cli("serve", "undeploy", fraud_ab)
    assert set(_deployments(platform)) == set(before) - set(pids)  # the split and its variants, nothing else
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids.values() if psutil.pid_exists(p)], timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
