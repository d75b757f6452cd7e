"""`sandbox`: bring an ML platform stack up on a profile, inspect it, take it down.

One module per command group; each command parses its arguments and calls library code:
`stack` (up, down, status, env, logs, doctor), `serve`, `gpu`, `scenarios` (scenario list|run,
checklist), `loadtest`, `monitor`. Shared options are declared once in `options`, profile loading
and registration in `common`, error handling in `errors`, tables and lines in `render`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sandbox.cli import gpu, loadtest, monitor, scenarios, serve, stack
from sandbox.cli.errors import handle_errors, set_verbose
from sandbox.files import use_private_umask

app = typer.Typer(
    help="A local-first ML platform testbed: PostgreSQL, S3, MLflow (and more) on a profile.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks of unexpected errors.")] = False,
) -> None:
    set_verbose(verbose)
    # Everything the sandbox writes (logs, data, state, and every child process's files) is its owner's alone.
    use_private_umask()


# Top-level commands, in the order `sandbox --help` lists them; then the command groups.
for function in (
    stack.up,
    stack.down,
    stack.status,
    stack.env,
    stack.logs,
    scenarios.checklist,
    loadtest.loadtest,
    loadtest.loadtest_worker,
    stack.doctor,
    stack.diagnose,
):
    app.command()(function)
app.add_typer(scenarios.app, name="scenario")
app.add_typer(gpu.app, name="gpu")
app.add_typer(serve.app, name="serve")
app.add_typer(monitor.app, name="monitor")

__all__ = ["app", "handle_errors", "main"]
