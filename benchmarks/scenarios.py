"""Checklist benchmark: wall time of the whole checklist, side by side, and of each scenario, in one run.

    python benchmarks/scenarios.py [--jobs N] [--sequential]

Brings a sandbox up in a temporary directory, runs `sandbox checklist` once (every production-checklist
scenario, `--jobs` as given or the command's default), prints each scenario's time from the JUnit report,
their sum (what one after another would take) and the command's wall time, and takes the sandbox down.
With ``--sequential`` it runs the checklist a second time with `--jobs 1` on the same stack and prints the
ratio. Target (issue #26): all nine pass in at most 75 s wall.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET_S = 75.0
EXPECTED = 9  # scenarios in the checklist
console = Console(width=120)


def _checklist(
    base: list[str], sandbox_dir: Path, junit: Path, jobs: list[str]
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    run = subprocess.run(
        [*base, "checklist", "--dir", str(sandbox_dir), "--junit", str(junit), *jobs], capture_output=True, text=True
    )
    return run, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="scenarios at once (default: the command's own default)")
    parser.add_argument("--sequential", action="store_true", help="also run with --jobs 1 and print the ratio")
    args = parser.parse_args()
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    sequential_wall = None
    with tempfile.TemporaryDirectory(prefix="checklist-bench-") as tmp:
        sandbox_dir, junit = Path(tmp) / "sandbox", Path(tmp) / "junit.xml"
        base = [sys.executable, "-m", "sandbox"]
        try:
            subprocess.run([*base, "up", "--dir", str(sandbox_dir)], check=True, capture_output=True)
            run, wall = _checklist(base, sandbox_dir, junit, jobs)  # first: on a fresh stack, as the target says
            if args.sequential:
                one_by_one, sequential_wall = _checklist(base, sandbox_dir, Path(tmp) / "junit-1.xml", ["--jobs", "1"])
                if one_by_one.returncode != 0:
                    console.print(f"[red]the checklist with --jobs 1 failed[/]: {one_by_one.stderr[-2000:]}")
        finally:
            subprocess.run([*base, "down", "--purge", "--dir", str(sandbox_dir)], capture_output=True)
        if not junit.exists():
            console.print(run.stderr)
            return 1
        cases = list(ET.parse(junit).getroot().iter("testcase"))

    table = Table(title=f"Production checklist, local profile, {os.cpu_count()} cores")
    for column in ("scenario", "result", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    total = 0.0
    for case in cases:
        seconds = float(case.get("time"))
        total += seconds
        outcome = (
            "failed"
            if case.find("failure") is not None
            else "skipped"
            if case.find("skipped") is not None
            else "passed"
        )
        table.add_row(case.get("name"), outcome, f"{seconds:.1f}")
    table.add_row("sum of the scenarios (one after another)", "", f"{total:.1f}")
    table.add_row(f"whole `sandbox checklist {' '.join(jobs)}` command (wall)", "", f"{wall:.1f}")
    if sequential_wall is not None:
        table.add_row("whole `sandbox checklist --jobs 1` command (wall), second run", "", f"{sequential_wall:.1f}")
    console.print(table)
    if sequential_wall is not None:
        console.print(f"side by side vs one after another: {wall / sequential_wall:.2f}x the wall time")
    met = wall <= TARGET_S and run.returncode == 0 and len(cases) == EXPECTED
    console.print(
        f"{len(cases)} scenarios, {total:.1f} s of scenario time in {wall:.1f} s wall "
        f"(target <= {TARGET_S:.0f} s, all {EXPECTED} passing); checklist exit {run.returncode}: "
        + ("[green]target met.[/]" if met else "[red]target missed.[/]")
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
