"""Inference-logging benchmark: serving throughput with the inference log on and off.

    python -m benchmarks.inference_logging [--duration 15] [--users 50] [--rounds 2]

One run, one machine: two deployments of the same reference model (RandomForest,
100 trees, micro-batching on, the fastest configuration and so the one where
logging weighs most), one with the inference log and one without, measured
alternately (off, on, off, on, ...) with the same Locust load so drift in the
machine's load hits both. Prints requests/s per round, the mean ratio, whether
every answered row reached the log (Locust does not count requests still in
flight when it stops, so the log may hold a few more), and the target check: logging costs at
most 10% of throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.serving import sandbox_cli, sandbox_endpoints
from sandbox.loadtest import LoadTestOptions, Target, run
from sandbox.serving.inference_log import InferenceLogStore, wait_for_rows
from sandbox.serving.reference_model import register_reference_model, synthetic_data

console = Console(width=150)
MODEL = "bench-logging"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15, help="seconds per measurement (default 15)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs (default 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-ms", type=float, default=3)
    args = parser.parse_args()

    results: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="logging-bench-") as tmp:
        workdir = Path(tmp)
        sandbox_dir = workdir / "sandbox"
        try:
            console.print("bringing a sandbox up and registering the reference model (RandomForest, 100 trees) ...")
            sandbox_cli("up", sandbox_dir=sandbox_dir)
            endpoints = sandbox_endpoints(sandbox_dir)
            model = register_reference_model(endpoints.mlflow_tracking_uri, MODEL, n_estimators=100, features=8)
            batching = ["--batch-size", str(args.batch_size), "--batch-wait-ms", str(args.batch_wait_ms)]
            for name, flag in (("rf-log-on", "--inference-log"), ("rf-log-off", "--no-inference-log")):
                sandbox_cli("serve", "deploy", name, "--model", model.uri, flag, *batching, sandbox_dir=sandbox_dir)
            endpoints = sandbox_endpoints(sandbox_dir)
            store = InferenceLogStore(endpoints.monitoring_db_url)
            rows = synthetic_data(rows=256, seed=42)[0].to_numpy().round(4).tolist()
            options = LoadTestOptions(users=args.users, spawn_rate=args.users, duration_s=args.duration, rows=rows)

            for round_ in range(1, args.rounds + 1):
                for mode in ("off", "on"):
                    name = f"rf-log-{mode}"
                    since = datetime.now(UTC)
                    summary = run(
                        Target(endpoints.inference[name].url, name, "v1", name, endpoints.serving_token),
                        options,
                        workdir / f"{name}-{round_}",
                    )
                    answered = summary["requests"] - summary["failures"]
                    logged = (
                        wait_for_rows(store, answered, timeout=60, deployment=name, since=since) if mode == "on" else 0
                    )
                    summary["logged"] = logged
                    summary["answered"] = answered
                    results[mode].append(summary)
                    console.print(
                        f"  round {round_} · inference log {mode:>3}: {summary['rps']:.0f} req/s, "
                        f"p99 {summary['p99_ms']} ms, {summary['failures']} failures"
                        + (f", {logged}/{answered} rows logged" if mode == "on" else "")
                    )
        finally:
            subprocess.run(
                [sys.executable, "-m", "sandbox", "down", "--purge", "--dir", str(sandbox_dir)], capture_output=True
            )

    table = Table(
        title=f"Reference RandomForest, batching {args.batch_size}/{args.batch_wait_ms:g} ms, {args.users} users, "
        f"{args.duration:g} s per cell, {os.cpu_count()} cores"
    )
    for column in ("inference log", "round", "req/s", "p50 ms", "p99 ms", "errors", "rows logged"):
        table.add_column(column, justify="left" if column == "inference log" else "right")
    for mode, summaries in results.items():
        for index, s in enumerate(summaries, 1):
            table.add_row(
                mode,
                str(index),
                f"{s['rps']:.0f}",
                str(s["p50_ms"]),
                str(s["p99_ms"]),
                str(s["failures"]),
                f"{s['logged']}/{s['answered']}" if mode == "on" else "-",
            )
    console.print(table)

    off = statistics.mean(s["rps"] for s in results["off"])
    on = statistics.mean(s["rps"] for s in results["on"])
    cost = 1 - on / off if off else 1.0
    # Requests in flight when Locust stops are answered (and logged) but not counted: logged >= answered.
    complete = all(s["logged"] >= s["answered"] for s in results["on"])
    met = cost <= 0.10 and complete
    console.print(
        f"Mean throughput: {on:.0f} req/s with the inference log, {off:.0f} without: ratio {on / off:.3f}, "
        f"cost {cost:.1%} (target <= 10%); every answered row logged: {complete}. "
        + ("[green]Target met.[/]" if met else "[red]Target missed.[/]")
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
