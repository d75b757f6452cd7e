"""Serving benchmark: the sandbox's model server side by side with MLServer and `mlflow models serve`.

    python -m benchmarks.serving [--duration 12] [--rounds 2] [--connections 50]
                                 [--only ours,mlserver,mlflow] [--generator locust,wrk]
    python -m benchmarks.serving --duration 5 --rounds 1 --only ours,mlserver --generator wrk   # a quick run

One run, one machine, one reference model (RandomForest, 100 trees, 8
features, one row per request), every server on 127.0.0.1 serving the same
registered model version:

  ours      the sandbox's model server as `sandbox serve deploy` runs it, micro-batching
            (64 rows / 3 ms), inference log off, KServe V1 JSON
  mlserver  MLServer + mlserver-mlflow (the runtime KServe uses for MLflow models), adaptive
            batching with the same settings, `parallel_workers: 0`, V2 JSON (one input per column);
            installed into a virtualenv of its own under --cache-dir on first use
  mlflow    `mlflow models serve`, its /invocations JSON
  ours-nobatch (opt-in) the sandbox's model server without batching

Two load generators, both closed loop with the same request bodies: Locust
(`FastHttpUser`, users = connections) and wrk (`--latency`, a Lua script for
the POST bodies; skipped when wrk is not on PATH). Servers are measured in
turn, in rounds (the order reversed every other round) so drift in the
machine's load hits all of them. Prints a table (requests/s per round, p50,
p99, errors, the generator's CPU) with the ratios "ours / MLServer" and "ours /
mlflow models serve" from the same run, writes it all as JSON to --results,
and checks the project's targets at the highest connection count: batching
serves at least 1.2x MLServer's requests/s with a p99 no higher than
MLServer's, and at least 10x those of `mlflow models serve` with a lower p99.
The inference log is off, as the peers have none: this compares serving
engines; what logging costs is `benchmarks/inference_logging.py`'s figure, and
`--inference-log` measures ours with it on against the same peers.

It brings a sandbox up in a temporary directory and takes it down at the end;
every process it starts is stopped as a process group, on failure and on
Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.load_generators import GENERATORS, measure, wrk_path
from benchmarks.mlserver_peer import MLSERVER_VERSION, MLServerPeer, ensure_venv
from benchmarks.servers import (
    BenchContext,
    MLflowModelsServe,
    SandboxModelServer,
    SandboxModelServerNoBatching,
    ServerUnderTest,
    sandbox_cli,
    sandbox_endpoints,
)
from sandbox.serving.reference_model import register_reference_model, synthetic_data

console = Console(width=170, highlight=False)

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVERS: dict[str, type[ServerUnderTest]] = {
    "ours": SandboxModelServer,
    "mlserver": MLServerPeer,
    "mlflow": MLflowModelsServe,
    "ours-nobatch": SandboxModelServerNoBatching,
}
PEERS = {"mlserver": "MLServer", "mlflow": "mlflow models serve"}  # the ratios "ours / PEER"
MODEL_NAME = "bench-rf"
# Per peer: the least "ours / peer" requests/s ratio, and whether our p99 may equal the peer's.
TARGETS = {"mlserver": (1.2, True), "mlflow": (10.0, False)}

__all__ = ["main", "sandbox_cli", "sandbox_endpoints"]  # benchmarks.inference_logging uses the two helpers


def _names(text: str, allowed, option: str, parser: argparse.ArgumentParser) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        parser.error(f"{option}: {', '.join(unknown) or 'nothing'} (choose from {', '.join(allowed)})")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=12, help="seconds per measurement (default 12)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all servers (default 2)")
    parser.add_argument("--connections", default="50", help="concurrent connections (Locust users), comma-separated")
    parser.add_argument("--only", default="ours,mlserver,mlflow", help=f"servers: any of {', '.join(SERVERS)}")
    parser.add_argument("--generator", default="locust,wrk", help="load generators: locust, wrk or both")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="wrk threads (default: cores)")
    parser.add_argument(
        "--inference-log",
        action="store_true",
        help="deploy ours with the inference log on (the peers have none): what serving costs with it",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-ms", type=float, default=3)
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "serving.json", help="JSON results"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=REPO_ROOT / ".bench", help="where the MLServer virtualenv lives"
    )
    args = parser.parse_args(argv)
    args.servers = _names(args.only, SERVERS, "--only", parser)
    args.generators = _names(args.generator, GENERATORS, "--generator", parser)
    try:
        args.connections = [int(c) for c in args.connections.split(",")]
    except ValueError:
        parser.error("--connections: give numbers, e.g. 10,50")
    if args.duration <= 0 or args.rounds < 1 or min(args.connections) < 1 or args.threads < 1:
        parser.error("duration, rounds, connections and threads must be positive")
    return args


def _terminate(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # so that cleanup runs on SIGTERM as on Ctrl-C


def _quietly(what: str, action: Callable[[], object]) -> Callable[[], None]:
    """A clean-up step that reports its failure instead of hiding the error that got us here."""

    def step() -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - clean-up goes on with the next step
            console.print(f"[yellow]warning: {what} failed: {exc}[/]")

    return step


# --- setup -----------------------------------------------------------------------------------------------------


def bring_up(args: argparse.Namespace, workdir: Path, stack: ExitStack) -> tuple[BenchContext, list[str]]:
    """A fresh sandbox with the reference model registered; returns the context and the payload bodies' rows."""
    sandbox_dir = workdir / "sandbox"
    down = [sys.executable, "-m", "sandbox", "down", "--purge", "--dir", str(sandbox_dir)]
    stack.callback(_quietly("sandbox down", lambda: subprocess.run(down, capture_output=True, timeout=120)))
    console.print("bringing a sandbox up and registering the reference model (RandomForest, 100 trees) ...")
    sandbox_cli("up", sandbox_dir=sandbox_dir)
    endpoints = sandbox_endpoints(sandbox_dir)
    model = register_reference_model(endpoints.mlflow_tracking_uri, MODEL_NAME, n_estimators=100, features=8)
    frame, _ = synthetic_data(rows=64, seed=42)
    ctx = BenchContext(
        sandbox_dir=sandbox_dir,
        endpoints=endpoints,
        model_uri=model.uri,
        model_name=MODEL_NAME,
        columns=list(frame.columns),
        workdir=workdir,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        cache_dir=args.cache_dir,
        inference_log=args.inference_log,
    )
    return ctx, frame.to_numpy().round(4).tolist()


def start_servers(ctx: BenchContext, keys: list[str], rows: list, stack: ExitStack) -> list[ServerUnderTest]:
    servers = []
    for key in keys:
        server = SERVERS[key](ctx)
        stack.callback(_quietly(f"stopping {server.label}", server.stop))
        console.print(f"starting {server.label} ...")
        started = time.monotonic()
        server.start()
        addresses = server.check_loopback_only()
        answer = server.check_answers([server.body(row) for row in rows])
        console.print(f"  ready in {time.monotonic() - started:.1f} s at {server.url}")
        console.print(f"  listening on {', '.join(addresses)} only; answers {answer[:100]}")
        servers.append(server)
    return servers


# --- measuring -------------------------------------------------------------------------------------------------


def measure_all(servers: list[ServerUnderTest], rows: list, args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Every server under every generator and connection count, round after round; one record per measurement.

    Even rounds run the sequence backwards, so a slow drift in the machine's load weighs on all servers alike.
    """
    bodies = {server.key: [server.body(row) for row in rows] for server in servers}
    total = args.rounds * len(args.connections) * len(args.generators) * len(servers)
    console.print(f"measuring: {total} runs of {args.duration:g} s ({', '.join(args.generators)})")
    runs = [
        (connections, generator, server)
        for connections in args.connections
        for generator in args.generators
        for server in servers
    ]
    records = []
    for round_no in range(1, args.rounds + 1):
        for connections, generator, server in runs if round_no % 2 else runs[::-1]:
            figures = measure(
                generator,
                server.url,
                bodies[server.key],
                expect=server.expect,
                connections=connections,
                duration_s=args.duration,
                threads=args.threads,
                scratch=workdir / "runs" / f"{round_no}-{generator}-{connections}-{server.key}",
                headers=server.headers,
            )
            records.append(
                {
                    "round": round_no,
                    "server": server.key,
                    "generator": generator,
                    "connections": connections,
                    **figures.as_dict(),
                }
            )
            console.print(
                f"  round {round_no} · {generator:6} · {connections:>3} conns · {server.label}: "
                f"{figures.rps:.0f} req/s, p50 {_ms(figures.p50_ms)} ms, p99 {_ms(figures.p99_ms)} ms, "
                f"{figures.errors} errors, generator CPU {figures.generator_cpu_percent:.0f}%"
            )
    return records


# --- summarising -----------------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def summarize(records: list[dict], servers: list[ServerUnderTest], args: argparse.Namespace) -> list[dict]:
    """One row per (generator, connections, server), with its rounds and means, and ours ÷ it."""
    rows = []
    for generator in args.generators:
        for connections in args.connections:
            for server in servers:
                rounds = [
                    r
                    for r in records
                    if (r["server"], r["generator"], r["connections"]) == (server.key, generator, connections)
                ]
                if not rounds:
                    continue
                rows.append(
                    {
                        "server": server.key,
                        "label": server.label,
                        "generator": generator,
                        "connections": connections,
                        "rps": [round(r["rps"], 1) for r in rounds],
                        "p50_ms": [round(r["p50_ms"], 2) for r in rounds],
                        "p99_ms": [round(r["p99_ms"], 2) for r in rounds],
                        "mean_rps": round(statistics.fmean(r["rps"] for r in rounds), 1),
                        "mean_p50_ms": round(statistics.fmean(r["p50_ms"] for r in rounds), 2),
                        "mean_p99_ms": round(statistics.fmean(r["p99_ms"] for r in rounds), 2),
                        "errors": sum(r["errors"] for r in rounds),
                        "generator_cpu_percent": round(max(r["generator_cpu_percent"] for r in rounds), 1),
                        "rounds": rounds,
                    }
                )
    for row in rows:
        ours = _find(rows, "ours", row["generator"], row["connections"])
        row["ours_over_this_rps"] = _ratio(ours["mean_rps"], row["mean_rps"]) if ours else None
    return rows


def _find(rows: list[dict], server: str, generator: str, connections: int) -> dict | None:
    return next(
        (r for r in rows if (r["server"], r["generator"], r["connections"]) == (server, generator, connections)), None
    )


def ratios(rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """ours / PEER for requests/s (mean, and round by round) and p99, per generator and connection count."""
    found = []
    for generator in args.generators:
        for connections in args.connections:
            ours = _find(rows, "ours", generator, connections)
            for peer, name in PEERS.items():
                other = _find(rows, peer, generator, connections)
                if ours is None or other is None:
                    continue
                found.append(
                    {
                        "ratio": f"ours / {name}",
                        "peer": peer,
                        "generator": generator,
                        "connections": connections,
                        "rps": _ratio(ours["mean_rps"], other["mean_rps"]),
                        "rps_by_round": [_ratio(a, b) for a, b in zip(ours["rps"], other["rps"], strict=True)],
                        "p99": _ratio(ours["mean_p99_ms"], other["mean_p99_ms"]),
                    }
                )
    return found


def target_checks(rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """At the highest connection count, per generator and peer: the req/s ratio and the p99 against the target."""
    top = max(args.connections)
    checks = []
    for generator in args.generators:
        ours = _find(rows, "ours", generator, top)
        for peer, (least_ratio, p99_may_equal) in TARGETS.items():
            other = _find(rows, peer, generator, top)
            if ours is None or other is None:
                continue
            ratio = _ratio(ours["mean_rps"], other["mean_rps"]) or float("inf")
            p99_ok = (
                ours["mean_p99_ms"] <= other["mean_p99_ms"]
                if p99_may_equal
                else ours["mean_p99_ms"] < other["mean_p99_ms"]
            )
            checks.append(
                {
                    "peer": PEERS[peer],
                    "generator": generator,
                    "connections": top,
                    "rps_ratio": ratio,
                    "target_ratio": least_ratio,
                    "p99_ms": ours["mean_p99_ms"],
                    "peer_p99_ms": other["mean_p99_ms"],
                    "p99_rule": "no higher" if p99_may_equal else "lower",
                    "errors": ours["errors"] + other["errors"],
                    # Errors void a measurement: a 401 or a refusal is answered faster than any prediction.
                    "met": ratio >= least_ratio and p99_ok and ours["errors"] == 0 and other["errors"] == 0,
                }
            )
    return checks


def print_report(rows: list[dict], found_ratios: list[dict], checks: list[dict], args: argparse.Namespace) -> None:
    table = Table(
        title=(
            f"Reference RandomForest (100 trees, 8 features), 1 row per request, {args.duration:g} s per run, "
            f"{args.rounds} round(s), {os.cpu_count()} cores, generator on the same machine"
        )
    )
    columns = ("server", "generator", "conns", "req/s by round", "mean req/s", "p50 ms", "p99 ms", "errors")
    for column in (*columns, "gen CPU max", "ours ÷ this"):
        table.add_column(column, justify="left" if column in ("server", "generator") else "right")
    for row in rows:
        ratio = row["ours_over_this_rps"]
        table.add_row(
            row["label"],
            row["generator"],
            str(row["connections"]),
            ", ".join(f"{v:.0f}" for v in row["rps"]),
            f"{row['mean_rps']:.0f}",
            ", ".join(_ms(v) for v in row["p50_ms"]),
            ", ".join(_ms(v) for v in row["p99_ms"]),
            str(row["errors"]),
            f"{row['generator_cpu_percent']:.0f}%",
            f"{ratio:.2f}x" if ratio is not None else "",
        )
    console.print(table)
    for r in found_ratios:
        console.print(
            f"{r['ratio']} ({r['generator']}, {r['connections']} conns): req/s {r['rps']:.2f}x "
            f"(by round {', '.join(f'{v:.2f}' for v in r['rps_by_round'] if v is not None)}), "
            f"p99 {r['p99']:.2f}x"
        )
    for c in checks:
        verdict = "[green]Target met.[/]" if c["met"] else "[red]Target missed.[/]"
        console.print(
            f"Target vs {c['peer']} ({c['generator']}, {c['connections']} conns): {c['rps_ratio']:.2f}x its "
            f"requests/s (target >= {c['target_ratio']:g}x), p99 {_ms(c['p99_ms'])} ms vs "
            f"{_ms(c['peer_p99_ms'])} ms (target: {c['p99_rule']})"
            + (f", {c['errors']} errors (target: none)" if c["errors"] else "")
            + f". {verdict}"
        )


def _wrk_version() -> str | None:
    if wrk_path() is None:
        return None
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).split(" [")[0].strip() or None


def write_results(path: Path, rows: list[dict], found_ratios, checks, servers, args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "serving",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": "reference RandomForest, 100 trees, 8 features, 1 row per request",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "generators": args.generators,
            "wrk_threads": args.threads,
            "batch_size": args.batch_size,
            "batch_wait_ms": args.batch_wait_ms,
        },
        "versions": {
            "mlflow": version("mlflow"),
            "kserve": version("kserve"),
            "locust": version("locust"),
            "mlserver": MLSERVER_VERSION if "mlserver" in args.servers else None,
            "wrk": _wrk_version() if "wrk" in args.generators else None,
        },
        "servers": {server.key: server.label for server in servers},
        "rows": rows,
        "ratios": found_ratios,
        "targets": checks,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"results written to {path}")


# --- main ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "wrk" in args.generators and wrk_path() is None:
        console.print("[yellow]wrk not found on PATH: its measurements are skipped (Debian: apt-get install wrk)[/]")
        args.generators.remove("wrk")
        if not args.generators:
            console.print("[red]no load generator left to run[/]")
            return 2
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    stack = ExitStack()
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    try:
        if "mlserver" in args.servers:
            ensure_venv(args.cache_dir)  # first, so a failed install costs no sandbox start
        ctx, rows = bring_up(args, workdir, stack)
        servers = start_servers(ctx, args.servers, rows, stack)
        records = measure_all(servers, rows, args, workdir)
    finally:
        # Clean-up must finish: a second Ctrl-C (or a SIGTERM) now would leave servers running.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping the servers and the sandbox (Ctrl-C is ignored until that is done) ...")
        stack.close()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)

    summary = summarize(records, servers, args)
    found_ratios = ratios(summary, args)
    checks = target_checks(summary, args)
    print_report(summary, found_ratios, checks, args)
    write_results(args.results, summary, found_ratios, checks, servers, args)
    return 0 if all(check["met"] for check in checks) else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; every process the benchmark started has been stopped[/]")
        raise SystemExit(130) from None
