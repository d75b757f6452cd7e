"""The stack's life cycle and inspection: up, down, status, env, logs, doctor, diagnose."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sandbox import ui
from sandbox.cli import render
from sandbox.cli.common import command
from sandbox.cli.options import Stack
from sandbox.errors import ConfigError, ExitCode


@command()
def up(
    stack: Stack = Stack(),
    postgres_port: Annotated[int | None, typer.Option(help="PostgreSQL port (0: automatic)")] = None,
    s3_port: Annotated[int | None, typer.Option(help="S3 port (0: automatic)")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port (0: automatic)")] = None,
    notebooks: Annotated[
        bool | None,
        typer.Option("--notebooks/--no-notebooks", help="Start JupyterLab [default: notebooks.enabled, true]"),
    ] = None,
    notebooks_port: Annotated[int | None, typer.Option(help="JupyterLab port (0: automatic)")] = None,
    keep: Annotated[bool, typer.Option(help="On failure, leave started services running for debugging.")] = False,
    context: Annotated[
        str | None, typer.Option("--context", help="Kube context to install into (cluster profile: required)")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the ordered actions (what each starts and where; kind, cluster: the exact commands); "
            "change nothing.",
        ),
    ] = False,
    render_dir: Annotated[
        Path | None,
        typer.Option("--render", metavar="DIR", help="Write every manifest and values file (validated) into DIR."),
    ] = None,
) -> None:
    """Start the stack (idempotent): PostgreSQL, S3 object store, MLflow, JupyterLab (kind: KServe, KFP too)."""
    overrides = up_overrides(postgres_port, s3_port, mlflow_port, notebooks, notebooks_port)
    prof = stack.open(**overrides, **{"cluster.context": context})
    if dry_run and render_dir is not None:
        raise ConfigError(
            "--dry-run and --render are two ways to look at the plan without running it; give one",
            hint="`sandbox up --dry-run` prints the actions and commands; `sandbox up --render DIR` writes the objects",
        )
    if dry_run:
        render.plan(prof.name, prof.plan())
        return
    if render_dir is not None:
        render.rendered(prof.render(render_dir))
        return
    started = time.monotonic()
    ui.err.print(f"Bringing up the [bold]{prof.name}[/] sandbox in {prof.config.root}")
    endpoints = prof.up(keep=keep)
    render.endpoints_ready(prof, endpoints, seconds=time.monotonic() - started, dir_given=stack.dir is not None)


def up_overrides(
    postgres_port: int | None,
    s3_port: int | None,
    mlflow_port: int | None,
    notebooks: bool | None,
    notebooks_port: int | None,
) -> dict:
    """`up`'s flags as config overrides (None: not given, the configuration decides)."""
    return {
        "postgres.port": postgres_port,
        "s3.port": s3_port,
        "mlflow.port": mlflow_port,
        "notebooks.enabled": notebooks,
        "notebooks.port": notebooks_port,
    }


@command()
def down(
    stack: Stack = Stack(),
    purge: Annotated[bool, typer.Option(help="Also delete the sandbox directory and all its data.")] = False,
    keep_cluster: Annotated[
        bool, typer.Option("--keep-cluster", help="kind: keep the cluster, remove only the stack's objects.")
    ] = False,
) -> None:
    """Stop every process the sandbox started (idempotent); keep the data unless --purge."""
    stack.open(lenient=True).down(purge=purge, keep_cluster=keep_cluster)  # a profile with no cluster refuses it


@command()
def status(
    stack: Stack = Stack(),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, with endpoints and credentials.")] = False,
) -> None:
    """Per-service state (running / waiting: starts on first use / stopped / unhealthy), what runs it, port, URL."""
    st = stack.open(lenient=True).status()
    if as_json:
        render.status_json(st)
        return
    if not st.services:
        ui.err.print(f"No sandbox in {st.dir} (profile {st.profile}). Start one with `sandbox up`.")
        raise typer.Exit(int(ExitCode.NOT_RUNNING))
    render.status_table(st)
    if st.overall != "running":
        raise typer.Exit(int(ExitCode.NOT_RUNNING))


@command()
def env(stack: Stack = Stack()) -> None:
    """Print `export` lines: eval "$(sandbox env)" points MLflow/boto3/minio code at the sandbox."""
    ui.out.print(stack.open().endpoints().shell_exports(), markup=False)


@command()
def logs(
    service: Annotated[
        str, typer.Argument(help="Service name (postgres, s3, mlflow, notebooks, supervisor) or a deployment")
    ],
    stack: Stack = Stack(),
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C to stop).")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines from the end to show.")] = 50,
) -> None:
    """Show a service's log."""
    for chunk in stack.open(lenient=True).logs(service, lines=lines, follow=follow):
        ui.out.file.write(chunk)
        ui.out.file.flush()


@command()
def doctor(stack: Stack = Stack()) -> None:
    """Check what a profile needs on this machine and say what to install."""
    prof = stack.open()
    checks = prof.preflight()
    render.doctor(prof.name, checks)
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        ui.err.print(f"[red]{len(failed)} problem(s)[/]: {', '.join(c.name for c in failed)}")
        raise typer.Exit(int(ExitCode.PREFLIGHT))
    ui.err.print(f"[green]All checks passed[/] for the {prof.name} profile.")


@command()
def diagnose(
    stack: Stack = Stack(),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="FILE", help="Where to write the archive [default: <dir>/kube/diagnostics-*.tar.gz]"
        ),
    ] = None,
) -> None:
    """kind, cluster: one archive of events, pod descriptions and logs from every namespace the stack touches."""
    path = stack.open(lenient=True).diagnose(out)
    ui.out.print(str(path), markup=False)
