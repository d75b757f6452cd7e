"""`sandbox gpu`: nodes, quotas and workload placement with Kubernetes' semantics."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from sandbox import ui
from sandbox.cli import render
from sandbox.cli.common import command
from sandbox.cli.options import Stack
from sandbox.errors import ConfigError, ExitCode

app = typer.Typer(help="GPU nodes, quotas and workload placement with Kubernetes' semantics.", no_args_is_help=True)


@command(app, "status")
def gpu_status(
    stack: Stack = Stack(),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
) -> None:
    """Nodes (fake and real GPUs), what runs where, pending workloads and quota use."""
    cluster = stack.open().scheduler().snapshot()
    if as_json:
        render.gpu_json(cluster)
    else:
        render.gpu_tables(cluster)


@command(app, "submit")
def gpu_submit(
    workload_file: Annotated[
        Path, typer.Argument(help="YAML workload: name, namespace, requests, limits, tolerations, ...")
    ],
    stack: Stack = Stack(),
) -> None:
    """Admit and place a Pod-like workload; prints Scheduled (with devices), Pending (why) or Rejected."""
    from sandbox.gpu import read_workload

    workload = read_workload(workload_file)
    decision = stack.open().scheduler().submit(workload)
    ui.out.print_json(json.dumps(asdict(decision)))
    if decision.status == "Rejected":
        raise typer.Exit(int(ExitCode.USAGE))


@command(app, "release")
def gpu_release(
    name: Annotated[str, typer.Argument(help="Workload name")],
    namespace: Annotated[str, typer.Option(help="Its namespace")] = "default",
    stack: Stack = Stack(),
) -> None:
    """Remove a workload; pending ones that now fit are scheduled and printed."""
    try:
        started = stack.open().scheduler().release(name, namespace)
    except KeyError:  # a name that is not there is a usage error (exit 2), not a stack that is down
        raise ConfigError(
            f"no workload {namespace}/{name}",
            hint="`sandbox gpu status` lists the workloads; give --namespace for one outside 'default'",
        ) from None
    ui.out.print_json(json.dumps([asdict(d) for d in started]))


@command(app, "render")
def gpu_render(
    out: Annotated[Path | None, typer.Option(help="Write the files here instead of printing the YAML")] = None,
    stack: Stack = Stack(),
) -> None:
    """The kind profile's objects from the inventory: kind config, GPU node patches, ResourceQuota, LimitRange."""
    from sandbox.gpu import render as objects

    gpu_config = stack.open().config.gpu
    if out is None:
        ui.out.print(objects.render_all(gpu_config), markup=False, highlight=False)
        return
    objects.write_all(gpu_config, out)
    ui.err.print(f"Wrote the kind config, quotas and GPU node patches to {out}")
