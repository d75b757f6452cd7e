"""The fault suite's ledger: per case, what was injected, acknowledged, lost, and how it recovered.

Each test adds a line (`ledger.add(...)`); at the end of the run the suite prints them as one table
(`pytest_terminal_summary` in conftest.py) and writes them to `reports/faults.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class FaultCase:
    case: str
    faults: int = 1  # faults injected
    acknowledged: int = 0  # writes the stack acknowledged during the case
    lost: int = 0  # of those, missing afterwards (must be 0)
    duplicates: int = 0  # written more than once (must be 0)
    recovery_s: float | None = None  # from the fault to healthy again
    orphans: int = 0  # processes of the sandbox, or files outside its dir (leftovers.py), left behind (must be 0)
    other_user_access: int = 0  # reads or writes another local user managed (must be 0)
    recovered: str = ""  # how: by itself (the supervisor), by `up`, ...


@dataclass
class Ledger:
    cases: list[FaultCase] = field(default_factory=list)

    def add(self, case: str, **figures) -> FaultCase:
        entry = FaultCase(case, **figures)
        self.cases.append(entry)
        return entry

    def rows(self) -> list[list[str]]:
        header = ["case", "faults", "acknowledged", "lost", "duplicates", "recovery", "orphans", "other user", "how"]
        rows = [header]
        for c in self.cases:
            recovery = f"{c.recovery_s:.1f}s" if c.recovery_s is not None else "-"
            rows.append(
                [
                    c.case,
                    str(c.faults),
                    str(c.acknowledged),
                    str(c.lost),
                    str(c.duplicates),
                    recovery,
                    str(c.orphans),
                    str(c.other_user_access),
                    c.recovered,
                ]
            )
        return rows

    def table(self) -> str:
        rows = self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        totals = {
            "faults injected": sum(c.faults for c in self.cases),
            "writes acknowledged": sum(c.acknowledged for c in self.cases),
            "writes lost": sum(c.lost for c in self.cases),
            "duplicates": sum(c.duplicates for c in self.cases),
            "orphans": sum(c.orphans for c in self.cases),
            "access by another user": sum(c.other_user_access for c in self.cases),
        }
        lines.append("")
        lines.append("Totals: " + ", ".join(f"{name} {value}" for name, value in totals.items()))
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(c) for c in self.cases], indent=2))
