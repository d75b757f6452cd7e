"""Footprint benchmark: the idle stack's memory per service, with JupyterLab (waiting for its first use, then
started) and without, and one model server.

    python -m benchmarks.footprint [--settle S]

On a fresh sandbox in a temporary folder, in this order:
  with notebooks      `sandbox up` (the default `notebooks.start: first-use`: JupyterLab not started, the supervisor
                      listens on its port), idle for --settle seconds;
  first visit         one request to JupyterLab's URL with its token (it starts JupyterLab), idle (no kernel open);
  without notebooks   `sandbox down`, `sandbox up --no-notebooks`, idle;
  model server        the reference model (RandomForest, 100 trees, 8 features) registered and deployed
                      (`sandbox serve deploy`, the defaults: inference log on), one request answered, idle.
Each process of the sandbox is found by its marker (as `sandbox down` finds them: benchmarks/processes.py) and
weighed by /proc/PID/smaps_rollup: RSS (what it holds in memory) and PSS (shared pages split among the
processes that share them, so the PSS of the stack adds up to what it really costs the machine).
Target (issue #26): the idle stack with JupyterLab <= 700 MiB RSS, judged on the default (`up`, no visit yet);
the figure after the first visit is printed beside it. `sandbox down --purge` runs at the end,
also after a failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.processes import MIB, Memory, ServiceMemory, sandbox_memory, total
from benchmarks.servers import sandbox_cli, sandbox_endpoints
from sandbox.serving.reference_model import register_reference_model, synthetic_data

console = Console()
TARGET_MIB = 700  # the idle stack with JupyterLab, RSS
MODEL = "footprint"


def idle_memory(sandbox_dir: Path, settle_s: float) -> list[ServiceMemory]:
    time.sleep(settle_s)  # past the start-up work: the first requests, imports done on first use
    return sandbox_memory(sandbox_dir)


def deploy_reference_model(sandbox_dir: Path) -> None:
    """The reference model registered and deployed, and one prediction asked, so the server is warm."""
    endpoints = sandbox_endpoints(sandbox_dir)
    model = register_reference_model(endpoints.mlflow_tracking_uri, MODEL, n_estimators=100, features=8)
    sandbox_cli("serve", "deploy", MODEL, "--model", model.uri, sandbox_dir=sandbox_dir)
    endpoints = sandbox_endpoints(sandbox_dir)
    frame, _ = synthetic_data(rows=1, seed=1)
    response = httpx.post(
        endpoints.inference[MODEL].v1_predict,
        json={"instances": frame.to_numpy().tolist()},
        headers=endpoints.serving_headers(),
        trust_env=False,
        timeout=60,
    )
    response.raise_for_status()


def mib(value: int) -> str:
    return f"{value / MIB:.0f}"


def table(title: str, rows: list[ServiceMemory]) -> Table:
    out = Table(title=title)
    for column in ("service", "processes", "RSS MiB", "PSS MiB"):
        out.add_column(column, justify="left" if column == "service" else "right")
    for row in rows:
        out.add_row(row.service, str(row.processes), mib(row.memory.rss), mib(row.memory.pss))
    summed = total(rows)
    out.add_row("[bold]total[/]", str(sum(row.processes for row in rows)), mib(summed.rss), mib(summed.pss))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=10, help="idle seconds before each measurement (10)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="footprint-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        sandbox_dir = Path(tmp) / "sandbox"
        try:
            console.print("bringing a sandbox up (JupyterLab included, started on first use) ...")
            sandbox_cli("up", sandbox_dir=sandbox_dir)
            with_notebooks = idle_memory(sandbox_dir, args.settle)
            console.print("the first visit to JupyterLab's URL (it starts JupyterLab) ...")
            sandbox_endpoints(sandbox_dir).notebooks_started()
            visited = idle_memory(sandbox_dir, args.settle)
            console.print("again without JupyterLab (`up --no-notebooks`) ...")
            sandbox_cli("down", sandbox_dir=sandbox_dir)
            sandbox_cli("up", "--no-notebooks", sandbox_dir=sandbox_dir)
            without = idle_memory(sandbox_dir, args.settle)
            console.print("registering and deploying the reference model ...")
            deploy_reference_model(sandbox_dir)
            servers = [row for row in idle_memory(sandbox_dir, args.settle) if row.service.startswith("deployment:")]
        finally:
            subprocess.run(
                [sys.executable, "-m", "sandbox", "down", "--purge", "--dir", str(sandbox_dir)],
                capture_output=True,
                timeout=300,
            )

    console.print(table("The idle stack with JupyterLab waiting for its first use (`up`)", with_notebooks))
    console.print(table("The idle stack after JupyterLab's first visit (started, no kernel open)", visited))
    console.print(table("The idle stack without JupyterLab (`up --no-notebooks`)", without))
    console.print(table("One model server of the reference model, idle after one request", servers))
    stack: Memory = total(with_notebooks)
    met = stack.rss <= TARGET_MIB * MIB
    verdict = "[green]met[/]" if met else "[red]missed[/]"
    console.print(
        f"target: the idle stack with JupyterLab <= {TARGET_MIB} MiB RSS: {mib(stack.rss)} MiB "
        f"(PSS {mib(stack.pss)} MiB) with JupyterLab waiting for its first use, {verdict}; after the first visit "
        f"{mib(total(visited).rss)} MiB (PSS {mib(total(visited).pss)} MiB); {os.cpu_count()} cores"
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
