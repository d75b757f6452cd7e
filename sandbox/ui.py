"""Terminal output: a ✓/✗ line per step, a spinner while waiting, readable errors.

Progress and errors go to stderr; data meant for pipes (`sandbox env`,
`status --json`) goes to stdout.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape

from sandbox.errors import SandboxError

# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns.
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


class Step:
    """Handle a step body uses to add a note to its ✓ line."""

    def __init__(self) -> None:
        self.note = ""
        self.failed = False  # a step can end without an exception and still have failed


@contextlib.contextmanager
def step(title: str) -> Iterator[Step]:
    handle = Step()
    started = time.monotonic()
    try:
        with err.status(f"{escape(title)} …"):
            yield handle
    except BaseException:
        step_line(title, "", time.monotonic() - started, failed=True)
        raise
    step_line(title, handle.note, time.monotonic() - started, failed=handle.failed)


def step_line(title: str, note: str, seconds: float, *, failed: bool = False) -> None:
    """A step's ✓/✗ line with its note and time (for steps run elsewhere, e.g. in threads, and printed here)."""
    shown = f" [dim]· {escape(note)}[/]" if note else ""
    mark = "[red]✗[/]" if failed else "[green]✓[/]"
    err.print(f" {mark} {escape(title)}{shown} [dim]({seconds:.1f}s)[/]")


def print_error(error: SandboxError) -> None:
    """One line saying what failed and how to fix it; supporting text (log tails) after it."""
    fix = f" [yellow]Fix:[/] {escape(error.hint)}" if error.hint else ""
    err.print(f"[bold red]ERROR:[/] {escape(error.message)}.{fix}")
    if error.details:
        err.print(f"[dim]{escape(error.details)}[/]")
