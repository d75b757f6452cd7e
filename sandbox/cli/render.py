"""How the commands show results: rich tables and lines on stdout (data) and stderr (progress, notes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from sandbox import ui
from sandbox.actions import plan_text

if TYPE_CHECKING:
    from sandbox.gpu.backend import SchedulerSnapshot

STATE_COLOURS = {"running": "green", "stopped": "dim", "unhealthy": "red", "waiting": "cyan"}


def titled_table(title: str | None, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


# --------------------------------------------------------------------------- the stack


def endpoints_ready(prof, endpoints, *, seconds: float, dir_given: bool) -> None:
    """After `up`: where things are, and the next commands (with --dir when one was given)."""
    ui.err.print(f"\n[bold green]Sandbox is up[/] ({seconds:.1f}s)\n")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("MLflow", endpoints.mlflow_tracking_uri, "tracking URI, registry and UI")
    table.add_row("S3", endpoints.s3_endpoint_url, f"buckets: {', '.join(endpoints.buckets)}")
    table.add_row("PostgreSQL", endpoints.postgres_url.split("@")[-1], "MLflow's backend store; the inference log")
    if endpoints.notebooks_url:
        table.add_row("JupyterLab", endpoints.notebooks_url, "notebooks; kernels point at this stack")
    ui.err.print(table)
    dir_flag = f" --dir {prof.config.dir}" if dir_given else ""
    ui.err.print(
        "\nUse it:\n"
        f'  eval "$(sandbox env{dir_flag})"   point mlflow, boto3 and the AWS CLI at it\n'
        f"  sandbox status{dir_flag}          health, processes, ports (--json for the credentials)\n"
        f"  sandbox down{dir_flag}            stop it; data is kept (--purge deletes it)"
    )


def plan(profile: str, actions) -> None:
    """`up --dry-run`: the ordered actions with their exact commands, on stdout."""
    if not actions:
        ui.err.print(
            f"The {profile} profile has no commands to plan: `sandbox up` starts nothing there, it checks the "
            "platform's endpoints (`sandbox doctor` shows what it needs). Nothing was changed."
        )
        return
    ui.out.print(f"`sandbox up --profile {profile}` would run {len(actions)} actions, in order:", markup=False)
    ui.out.print(plan_text(actions), markup=False)
    ui.err.print("Dry run: nothing was created, started or written.")


def rendered(paths: list[Path]) -> None:
    """`up --render DIR`: the files written, in apply order."""
    for path in paths:
        ui.out.print(str(path), markup=False)
    ui.err.print(f"Wrote {len(paths)} files (validated offline); nothing was applied.")


def status_json(st) -> None:
    ui.out.print_json(json.dumps(st.as_dict()))


def status_table(st) -> None:
    title = f"Sandbox {st.dir} · profile {st.profile} · {st.overall}"
    table = titled_table(title, "service", "state", "instance", "port", "url", "detail")
    table.columns[4].overflow = "fold"  # JupyterLab's URL carries its token: shown whole
    for s in st.services:
        state = s.state.value
        cells = [s.name, f"[{STATE_COLOURS[state]}]{state}[/]", s.instance or "-", str(s.port or "-"), s.url or "-"]
        table.add_row(*cells, escape(s.detail))
    ui.out.print(table)
    if st.deployments:
        deployments(st.deployments)
    for warning in st.warnings:
        ui.err.print(f"[yellow]WARNING:[/] {escape(warning)}")


def deployments(records) -> None:
    table = titled_table("Model deployments", "name", "kind", "state", "instance", "url", "model / variants")
    for d in records:
        what = d.model_uri or ""
        what = f"{what} · {d.detail}" if what and d.detail else what or d.detail
        table.add_row(d.name, d.kind, f"[{STATE_COLOURS[d.state]}]{d.state}[/]", d.instance or "-", d.url or "-", what)
    ui.out.print(table)


def doctor(name: str, checks) -> None:
    table = titled_table(f"doctor · profile {name}", "", "check", "found", "fix")
    for check in checks:
        mark = "[green]✓[/]" if check.ok else ("[red]✗[/]" if check.required else "[yellow]![/]")
        table.add_row(mark, check.name, check.detail, "" if check.ok else check.fix)
    ui.out.print(table)


# --------------------------------------------------------------------------- GPUs


def gpu_json(snapshot: SchedulerSnapshot) -> None:
    ui.out.print_json(json.dumps(snapshot.to_dict()))


def gpu_tables(snapshot: SchedulerSnapshot) -> None:
    nodes = titled_table("Nodes", "node", "GPUs (used/total)", "product", "cpu", "memory", "taints", "real")
    for node in snapshot.nodes:
        nodes.add_row(
            node.name,
            f"{node.gpus_used}/{node.gpus}",
            node.labels.get("nvidia.com/gpu.product", "-"),
            f"{node.cpu_used}/{node.cpu}",
            f"{node.memory_used}/{node.memory}",
            ", ".join(node.taints) or "-",
            "yes" if node.real else "fake",
        )
    ui.out.print(nodes)
    workloads = titled_table("Workloads", "namespace/name", "state", "node", "devices", "reason")
    for w in snapshot.workloads:
        devices = ",".join(map(str, w.devices)) or "-"
        workloads.add_row(f"{w.namespace}/{w.name}", w.phase, w.node or "-", devices, w.reason)
    ui.out.print(workloads)
    quotas = titled_table("Quotas", "namespace/name", "resource", "used", "hard")
    for quota in snapshot.quotas:
        for resource, hard in quota.hard.items():
            quotas.add_row(f"{quota.namespace}/{quota.name}", resource, quota.used.get(resource, "0"), hard)
    ui.out.print(quotas)


# --------------------------------------------------------------------------- load tests


# --------------------------------------------------------------------------- scenarios


def checklist(results, profile: str) -> None:
    from sandbox.scenarios import Outcome
    from sandbox.scenarios.reports import MARKS

    table = titled_table(
        f"Production checklist · profile {profile}", "", "checklist item", "scenario", "time", "evidence / reason"
    )
    colours = {Outcome.PASSED: "green", Outcome.FAILED: "red", Outcome.SKIPPED: "yellow"}
    for r in results:
        text = r.reason if r.outcome != Outcome.PASSED else (r.evidence[0] if r.evidence else "")
        table.add_row(f"[{colours[r.outcome]}]{MARKS[r.outcome]}[/]", r.checklist, r.name, f"{r.seconds:.1f}s", text)
    ui.out.print(table)


# --------------------------------------------------------------------------- monitoring


def drift(check) -> None:
    from sandbox.monitoring.checks import PREDICTION

    if check.report is not None:
        table = Table(title=f"Drift: {check.model_name} v{check.model_version}", title_justify="left")
        for column, justify in (("", "left"), ("feature", "left"), ("PSI", "right"), ("test", "left")):
            table.add_column(column, justify=justify)
        table.add_column("statistic", justify="right")
        table.add_column("p-value", justify="right")
        for feature in check.report.features:
            table.add_row(
                "[red]✗ drift[/]" if feature.drifted else "[green]✓[/]",
                f"{feature.name} (model output)" if feature.name == PREDICTION else feature.name,
                f"{feature.psi:.3f}",
                feature.test,
                f"{feature.statistic:.3f}",
                f"{feature.p_value:.2g}",
            )
        ui.out.print(table)
    ui.out.print(check.summary())
    if check.mlflow_run_id:
        ui.err.print(f"  logged to MLflow: experiment 'monitoring', run {check.mlflow_run_id}")


def decision(made) -> None:
    mark = "[green]✓ promoted[/]" if made.promoted else "[yellow]✗ not promoted[/]"
    ui.out.print(f"{mark} {made.model_name} v{made.challenger_version}: {made.reason}")
    if made.redeployed:
        ui.out.print(f"  redeployed {made.redeployed}")
    ui.err.print(f"  recorded: MLflow experiment 'retraining', run {made.mlflow_run_id}")


class WatchPrinter:
    """`monitor watch`'s lines (a `sandbox.monitoring.watch.WatchListener`): each check, retraining, decision, error."""

    def checked(self, check) -> None:
        ui.out.print(f"{time.strftime('%H:%M:%S')} {check.summary()}")

    def retraining(self, model, trigger) -> None:
        ui.out.print(f"  retraining {model}: {trigger.kind} ({trigger.detail})")

    def decided(self, made) -> None:
        decision(made)

    def failed(self, model, error) -> None:
        ui.print_error(error)
