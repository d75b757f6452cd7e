"""Startup benchmark: cold and warm `sandbox up` against a bare `mlflow server`, in one run.

    python -m benchmarks.startup [--rounds N]

Each round measures, on this machine and in this order:
  bare   `mlflow server --backend-store-uri sqlite:///...` with its defaults, from
         launch until /health and a REST call both answer (the yardstick);
  lean   the same with the sandbox's MLflow settings (1 worker, no job runner),
         to show how much of the gap those settings explain;
  cold   `sandbox up` on an empty directory until every service is healthy
         (initdb, bucket creation and MLflow's schema migrations included);
  warm   `sandbox down` then `sandbox up` on the same directory (data kept), JupyterLab included, i.e. notebooks
         enabled with the configuration in effect: by default `notebooks.start: first-use`, where `up` prepares
         JupyterLab and the supervisor starts it on the first visit (the output names the mode measured;
         SANDBOX_NOTEBOOKS__START=up measures the eager start);
  warm without notebooks   the same with `up --no-notebooks`.
After each warm start the stack's resident memory is summed over every process of the sandbox
(found by its marker, as `sandbox down` finds them), so the cost of the notebooks shows beside
the stack without them.
Medians over the rounds are compared as ratios, so machine noise mostly cancels.
Targets: warm (with JupyterLab, and without) <= 0.5x bare (issue #26), cold <= 3x bare (issue #2).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.processes import resident_mib

console = Console()
TARGETS = {"cold": 3.0, "warm": 0.5}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bare_mlflow(workdir: Path, *, lean: bool = False) -> float:
    """Seconds from launch to healthy; ``lean`` uses the sandbox's own worker settings."""
    port = _free_port()
    db = workdir / ("lean" if lean else "bare") / "mlflow.db"
    db.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ)
    if lean:
        argv += ["--workers", "1"]
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=db.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = started + 300
        while time.monotonic() < deadline:
            try:
                with httpx.Client(base_url=base, timeout=5, trust_env=False) as client:
                    client.get("/health").raise_for_status()
                    client.get("/api/2.0/mlflow/experiments/search", params={"max_results": 1}).raise_for_status()
                return time.monotonic() - started
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise RuntimeError("bare mlflow server exited") from None
                time.sleep(0.1)
        raise RuntimeError("bare mlflow server did not become ready in 300s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: uvicorn and huey workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def sandbox(*args: str, sandbox_dir: Path) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", *args, "--dir", str(sandbox_dir)],
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"sandbox {' '.join(args)} failed:\n{result.stderr}")
    return took


def notebooks_start_mode(sandbox_dir: Path) -> str:
    """How `sandbox up` starts JupyterLab here: the settings the CLI resolves (environment, sandbox.yaml)."""
    from sandbox.config import load_config

    config = load_config(profile="local", dir=sandbox_dir)
    if config.notebooks.start == "first-use" and config.supervisor.enabled:
        return "first-use: started on the first visit, not by `up`"
    return "up: started by `up`"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take the median of (default 3)")
    args = parser.parse_args()

    times: dict[str, list[float]] = {"bare": [], "lean": [], "cold": [], "warm": [], "warm-no-notebooks": []}
    memory: dict[str, list[float]] = {"notebooks": [], "no-notebooks": []}
    for round_no in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="sandbox-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
            workdir = Path(tmp)
            sandbox_dir = workdir / "sandbox"
            try:
                times["bare"].append(bare_mlflow(workdir))
                times["lean"].append(bare_mlflow(workdir, lean=True))
                times["cold"].append(sandbox("up", sandbox_dir=sandbox_dir))
                sandbox("down", sandbox_dir=sandbox_dir)
                times["warm"].append(sandbox("up", sandbox_dir=sandbox_dir))
                memory["notebooks"].append(resident_mib(sandbox_dir))
                sandbox("down", sandbox_dir=sandbox_dir)
                times["warm-no-notebooks"].append(sandbox("up", "--no-notebooks", sandbox_dir=sandbox_dir))
                memory["no-notebooks"].append(resident_mib(sandbox_dir))
            finally:
                subprocess.run(
                    [sys.executable, "-m", "sandbox", "down", "--purge", "--dir", str(sandbox_dir)],
                    capture_output=True,
                )
        console.print(
            f"round {round_no}: bare {times['bare'][-1]:.1f}s, bare lean {times['lean'][-1]:.1f}s, "
            f"cold {times['cold'][-1]:.1f}s, warm {times['warm'][-1]:.1f}s, "
            f"warm without notebooks {times['warm-no-notebooks'][-1]:.1f}s; resident "
            f"{memory['notebooks'][-1]:.0f} MiB with notebooks, {memory['no-notebooks'][-1]:.0f} MiB without"
        )

    mode = notebooks_start_mode(Path(tempfile.gettempdir()) / "sandbox-bench-mode")
    console.print(f"JupyterLab's start mode measured (notebooks.start): {mode}")
    bare = statistics.median(times["bare"])
    table = Table(title=f"Startup to all-healthy, median of {args.rounds} round(s), {os.cpu_count()} cores")
    for column in ("start", "seconds", "x bare mlflow", "target", "verdict"):
        table.add_column(column, justify="right" if column != "start" else "left")
    table.add_row("bare `mlflow server` (sqlite, defaults)", f"{bare:.1f}", "1.00", "", "")
    lean = statistics.median(times["lean"])
    table.add_row("bare, 1 worker, no job runner (for reference)", f"{lean:.1f}", f"{lean / bare:.2f}", "", "")
    failed = False
    for kind, label in (
        ("cold", "cold `sandbox up` (empty dir)"),
        ("warm", f"warm `sandbox up` (existing data; JupyterLab {mode.split(':')[0]})"),
        ("warm-no-notebooks", "warm `sandbox up --no-notebooks`"),
    ):
        value = statistics.median(times[kind])
        ratio = value / bare
        ok = ratio <= TARGETS[kind.split("-")[0]]
        failed |= not ok
        verdict = "[green]met[/]" if ok else "[red]missed[/]"
        table.add_row(label, f"{value:.1f}", f"{ratio:.2f}", f"<= {TARGETS[kind.split('-')[0]]:.1f}", verdict)
    console.print(table)
    with_notebooks, without = statistics.median(memory["notebooks"]), statistics.median(memory["no-notebooks"])
    resident = Table(title="The stack's resident memory, idle after a warm `sandbox up` (RSS summed, median)")
    for column in ("stack", "MiB"):
        resident.add_column(column, justify="right" if column == "MiB" else "left")
    resident.add_row(f"with notebooks (JupyterLab {mode.split(':')[0]}, no kernel open)", f"{with_notebooks:.0f}")
    resident.add_row("without notebooks (`--no-notebooks`)", f"{without:.0f}")
    resident.add_row("JupyterLab's share", f"{with_notebooks - without:+.0f}")
    console.print(resident)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
