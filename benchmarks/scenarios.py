"""Checklist benchmark: wall time of each scenario on the local profile, in one run.

    python benchmarks/scenarios.py

Brings a sandbox up in a temporary directory, runs `sandbox checklist` once
(every production-checklist scenario), prints each scenario's time from
the JUnit report and the total, and takes the sandbox down. Target (issue #4):
its five scenarios (tracking, pipelines, registry, data-versioning,
ab-testing) in at most 90 s; the scenarios added since are timed and
reported beside them, not held to that budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET_S = 90.0
TARGET_SCENARIOS = ("tracking", "pipelines", "registry", "data-versioning", "ab-testing")
console = Console(width=120)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="checklist-bench-") as tmp:
        sandbox_dir, junit = Path(tmp) / "sandbox", Path(tmp) / "junit.xml"
        base = [sys.executable, "-m", "sandbox"]
        try:
            subprocess.run([*base, "up", "--dir", str(sandbox_dir)], check=True, capture_output=True)
            started = time.monotonic()
            run = subprocess.run(
                [*base, "checklist", "--dir", str(sandbox_dir), "--junit", str(junit)], capture_output=True, text=True
            )
            wall = time.monotonic() - started
        finally:
            subprocess.run([*base, "down", "--purge", "--dir", str(sandbox_dir)], capture_output=True)
        if not junit.exists():
            console.print(run.stderr)
            return 1
        cases = list(ET.parse(junit).getroot().iter("testcase"))

    table = Table(title=f"Production checklist, local profile, {os.cpu_count()} cores")
    for column in ("scenario", "result", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    total = targeted = 0.0
    for case in cases:
        seconds = float(case.get("time"))
        total += seconds
        targeted += seconds if case.get("name") in TARGET_SCENARIOS else 0.0
        outcome = (
            "failed"
            if case.find("failure") is not None
            else "skipped"
            if case.find("skipped") is not None
            else "passed"
        )
        table.add_row(case.get("name"), outcome, f"{seconds:.1f}")
    table.add_row(f"issue #4's five ({', '.join(TARGET_SCENARIOS)})", "", f"{targeted:.1f}")
    table.add_row("all scenarios", "", f"{total:.1f}")
    table.add_row("whole `sandbox checklist` command", "", f"{wall:.1f}")
    console.print(table)
    present = {case.get("name") for case in cases}
    met = targeted <= TARGET_S and run.returncode == 0 and present >= set(TARGET_SCENARIOS)
    console.print(
        f"{len(cases)} scenarios in {total:.1f} s; issue #4's five in {targeted:.1f} s "
        f"(target <= {TARGET_S:.0f} s); checklist exit {run.returncode}: "
        + ("[green]target met.[/]" if met else "[red]target missed.[/]")
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
