"""Kind bring-up benchmark: the seconds of each action of `sandbox up --profile kind`, for real.

    python -m benchmarks.kind_actions [--dir DIR] [--twice] [--keep]      (make bench-kind)

For a machine where kind runs (Docker with cgroup v2, kind, kubectl, helm, internet for the
images and charts). Runs `sandbox up --profile kind` as a user would, prints a table of each
action's outcome and seconds (from the `timings.json` the profile writes after a successful
`up`), optionally a second `up` (every action should say "already done"), then `sandbox down`
(the cluster is deleted) unless --keep. On a machine without the prerequisites the preflight's
misses are printed, each with its fix, and the exit code is 5, as `sandbox up` gives.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sandbox.errors import ExitCode

console = Console(width=150)


def sandbox(*args: str, sandbox_dir: Path) -> tuple[int, float]:
    """Run the CLI with its progress shown live; its exit code and wall seconds."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "sandbox", *args, "--profile", "kind", "--dir", str(sandbox_dir)])
    return result.returncode, time.monotonic() - started


def timings_table(title: str, rows: list[dict], wall_s: float) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "action", "outcome", "seconds", "note"):
        table.add_column(column)
    for number, row in enumerate(rows, 1):
        table.add_row(str(number), row["title"], row["outcome"], f"{row['seconds']:.1f}", row["note"][:60])
    table.add_row("", "total (the actions)", "", f"{sum(r['seconds'] for r in rows):.1f}", "")
    table.add_row("", "wall (the command, preflight included)", "", f"{wall_s:.1f}", "")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="sandbox dir (default: a new temporary one)")
    parser.add_argument("--twice", action="store_true", help="also time a second `up` (every action already done)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    options = parser.parse_args()
    sandbox_dir = options.dir or Path(tempfile.mkdtemp(prefix="bench-kind-")) / "sandbox"
    timings = sandbox_dir / "kube" / "timings.json"

    code, wall = sandbox("up", sandbox_dir=sandbox_dir)
    if code == ExitCode.PREFLIGHT:
        console.print("[red]This machine cannot run kind[/]: the misses above, each with its fix (exit 5).")
        return int(ExitCode.PREFLIGHT)
    try:
        if code != 0:
            console.print(f"[red]sandbox up failed (exit {code})[/]: see its output above.")
            return code
        console.print(timings_table("sandbox up --profile kind", json.loads(timings.read_text()), wall))
        if options.twice:
            code, wall = sandbox("up", sandbox_dir=sandbox_dir)
            if code != 0:
                return code
            rows = json.loads(timings.read_text())
            console.print(timings_table("second sandbox up (nothing to do)", rows, wall))
            redone = [row["title"] for row in rows if row["outcome"] != "already done"]
            if redone:
                console.print(f"[yellow]Not idempotent[/]: a second up ran {', '.join(redone)}")
    finally:
        if not options.keep:
            down_code, down_s = sandbox("down", sandbox_dir=sandbox_dir)
            console.print(f"sandbox down: exit {down_code}, {down_s:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
