"""How a command fails: one readable line and an exit code; tracebacks only with `sandbox -v`."""

from __future__ import annotations

import functools
import traceback

import typer

from sandbox import ui
from sandbox.errors import ExitCode, SandboxError

_verbose = False


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def handle_errors(func):
    """Turn errors into one readable message and an exit code (tracebacks only with -v)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SandboxError as exc:
            ui.print_error(exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            ui.err.print("[yellow]Interrupted.[/]")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence: readable, then exit
            if _verbose:
                traceback.print_exc()
            ui.err.print(f"[bold red]ERROR:[/] unexpected {type(exc).__name__}: {exc}")
            ui.err.print("[yellow]fix:[/] rerun with `sandbox -v ...` for the traceback, and report it")
            raise typer.Exit(int(ExitCode.FAILED)) from None

    return wrapper
