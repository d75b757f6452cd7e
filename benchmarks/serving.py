"""Serving benchmark: our KServe model server (with and without micro-batching) against `mlflow models serve`.

    python benchmarks/serving.py [--duration 15] [--users 10,50] [--batch-size 64 --batch-wait-ms 3]

One run, one machine, one reference model (RandomForest, 100 trees, 8 features,
one row per request), all servers on 127.0.0.1 and measured one after another
with the same Locust load (closed loop, no think time). It brings a sandbox up
in a temporary directory and takes it down at the end. Prints the table and
the target check: at 50 users, batching gives at least 10x the requests/s of
`mlflow models serve`, with a lower p99. The inference log is off here, as
`mlflow models serve` has none: this compares serving engines; what logging
costs is `benchmarks/inference_logging.py`'s figure.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from sandbox.endpoints import Endpoints
from sandbox.loadtest import LoadTestOptions, Target, run
from sandbox.serving.reference_model import register_reference_model, synthetic_data

console = Console(width=150)


def sandbox_cli(*args: str, sandbox_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", *args, "--dir", str(sandbox_dir)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"sandbox {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def sandbox_endpoints(sandbox_dir: Path) -> Endpoints:
    import json

    return Endpoints(**json.loads(sandbox_cli("status", "--json", sandbox_dir=sandbox_dir))["endpoints"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_serve(model_uri: str, endpoints: Endpoints, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    # mlflow models serve execs `uvicorn` from PATH: put this interpreter's scripts first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **endpoints.env(), "PATH": path}
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--env-manager", "local"]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ping", timeout=2, trust_env=False).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError("mlflow models serve did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15, help="seconds per measurement (default 15)")
    parser.add_argument("--users", default="10,50", help="user counts, comma-separated (default 10,50)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-ms", type=float, default=3)
    args = parser.parse_args()
    user_counts = [int(u) for u in args.users.split(",")]

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        sandbox_dir = workdir / "sandbox"
        mlflow_serve = None
        try:
            console.print("bringing a sandbox up and registering the reference model (RandomForest, 100 trees) ...")
            sandbox_cli("up", sandbox_dir=sandbox_dir)
            endpoints = sandbox_endpoints(sandbox_dir)
            model = register_reference_model(endpoints.mlflow_tracking_uri, "bench-rf", n_estimators=100, features=8)
            sandbox_cli(
                "serve",
                "deploy",
                "rf-batched",
                "--model",
                model.uri,
                "--batch-size",
                str(args.batch_size),
                "--batch-wait-ms",
                str(args.batch_wait_ms),
                "--no-inference-log",
                sandbox_dir=sandbox_dir,
            )
            sandbox_cli(
                "serve", "deploy", "rf-plain", "--model", model.uri, "--no-inference-log", sandbox_dir=sandbox_dir
            )
            mlflow_serve, mlflow_base = start_mlflow_serve(model.uri, endpoints, workdir / "mlflow-serve.log")
            endpoints = sandbox_endpoints(sandbox_dir)

            frame, _ = synthetic_data(rows=256, seed=42)
            rows = frame.to_numpy().round(4).tolist()
            targets = {
                f"KServe ModelServer + micro-batching ({args.batch_size} rows / {args.batch_wait_ms:g} ms)": Target(
                    endpoints.inference["rf-batched"].url, "rf-batched", "v1", "rf-batched"
                ),
                "KServe ModelServer, no batching": Target(
                    endpoints.inference["rf-plain"].url, "rf-plain", "v1", "rf-plain"
                ),
                "mlflow models serve (pyfunc)": Target(mlflow_base, "invocations", "mlflow", "mlflow models serve"),
            }
            results: dict[tuple[str, int], dict] = {}
            for users in user_counts:
                for label, target in targets.items():
                    options = LoadTestOptions(
                        users=users, spawn_rate=users, duration_s=args.duration, rows=rows, columns=list(frame.columns)
                    )
                    summary = run(target, options, workdir / f"{target.model_name}-{users}")
                    results[(label, users)] = summary
                    console.print(
                        f"  {users:>3} users · {label}: {summary['rps']:.0f} req/s, p50 {summary['p50_ms']} ms, "
                        f"p99 {summary['p99_ms']} ms, {summary['failures']} failures"
                    )
        finally:
            if mlflow_serve is not None:
                os.killpg(mlflow_serve.pid, signal.SIGTERM)
                mlflow_serve.wait(timeout=30)
            subprocess.run(
                [sys.executable, "-m", "sandbox", "down", "--purge", "--dir", str(sandbox_dir)], capture_output=True
            )

    table = Table(
        title=f"Reference RandomForest, 1 row per request, {args.duration:g} s per cell, {os.cpu_count()} cores"
    )
    for column in ("server", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "generator CPU max"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for (label, users), s in results.items():
        cpu = s["generator_cpu_percent"]["max"]
        table.add_row(
            label,
            str(users),
            f"{s['rps']:.0f}",
            str(s["p50_ms"]),
            str(s["p95_ms"]),
            str(s["p99_ms"]),
            str(s["failures"]),
            f"{cpu:.0f}%" + (" (saturated)" if s["generator_saturated"] else ""),
        )
    console.print(table)

    top = max(user_counts)
    batched = next(s for (label, u), s in results.items() if u == top and "batching (" in label)
    mlflow = next(s for (label, u), s in results.items() if u == top and label.startswith("mlflow"))
    ratio = batched["rps"] / mlflow["rps"] if mlflow["rps"] else float("inf")
    lower_p99 = batched["p99_ms"] < mlflow["p99_ms"]
    met = ratio >= 10 and lower_p99
    console.print(
        f"At {top} users: batching serves {ratio:.1f}x the requests/s of mlflow models serve "
        f"(target >= 10x), p99 {batched['p99_ms']} ms vs {mlflow['p99_ms']} ms (target: lower). "
        + ("[green]Target met.[/]" if met else "[red]Target missed.[/]")
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
