"""`sandbox`: bring an ML platform stack up on a profile, inspect it, take it down."""

from __future__ import annotations

import functools
import json
import re
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sandbox import ui
from sandbox.config import fallback_config, load_config
from sandbox.errors import ConfigError, ExitCode, NotRunningError, SandboxError
from sandbox.profiles import PROFILES, Profile, get_profile
from sandbox.state import use_private_umask

app = typer.Typer(
    help="A local-first ML platform testbed: PostgreSQL, S3, MLflow (and more) on a profile.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_verbose = False

scenario_app = typer.Typer(help="Production-checklist scenarios: list them, run some.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
gpu_app = typer.Typer(help="GPU nodes, quotas and workload placement with Kubernetes' semantics.", no_args_is_help=True)
app.add_typer(gpu_app, name="gpu")
serve_app = typer.Typer(help="Serve registered models on KServe's V1/V2 protocols; A/B splits.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
monitor_app = typer.Typer(
    help="Drift monitoring over the inference log, and automated retraining.", no_args_is_help=True
)
app.add_typer(monitor_app, name="monitor")

ProfileOpt = Annotated[
    str | None, typer.Option("--profile", "-p", help=f"Where the stack runs: {', '.join(PROFILES)} [default: local]")
]
DirOpt = Annotated[Path | None, typer.Option("--dir", "-d", help="Sandbox state directory [default: .sandbox]")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file [default: ./sandbox.yaml if present]")
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks of unexpected errors.")] = False,
) -> None:
    global _verbose
    _verbose = verbose
    # Everything the sandbox writes (logs, data, state, and every child process's files) is its owner's alone.
    use_private_umask()


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


def _profile(
    profile: str | None, dir: Path | None, config: Path | None, *, lenient: bool = False, **overrides: Any
) -> Profile:
    """The profile for a command; ``lenient`` commands (status, down, logs) survive a broken configuration.

    They warn, then work from what the sandbox recorded in its directory, so a running sandbox can
    always be inspected and stopped; every other command refuses a bad configuration (exit 2).
    """
    try:
        cfg = load_config(config, profile=profile, dir=dir, **overrides)
    except ConfigError as exc:
        if not lenient:
            raise
        cfg = fallback_config(config, profile=profile, dir=dir)
        fix = f" [yellow]Fix:[/] {escape(exc.hint)}" if exc.hint else ""
        ui.err.print(
            f"[yellow]warning:[/] {escape(exc.message)}; ignoring the configuration, "
            f"using what the sandbox in {escape(str(cfg.root))} recorded.{fix}"
        )
        if exc.details:
            ui.err.print(f"[dim]{escape(exc.details)}[/]")
    return get_profile(cfg)


# --------------------------------------------------------------------------- up / down


@app.command()
@handle_errors
def up(
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
    postgres_port: Annotated[int | None, typer.Option(help="PostgreSQL port (0: automatic)")] = None,
    s3_port: Annotated[int | None, typer.Option(help="S3 port (0: automatic)")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port (0: automatic)")] = None,
    keep: Annotated[bool, typer.Option(help="On failure, leave started services running for debugging.")] = False,
) -> None:
    """Start the stack (idempotent): PostgreSQL, S3 object store, MLflow."""
    prof = _profile(
        profile,
        dir,
        config,
        **{"postgres.port": postgres_port, "s3.port": s3_port, "mlflow.port": mlflow_port},
    )
    started = time.monotonic()
    ui.err.print(f"Bringing up the [bold]{prof.name}[/] sandbox in {prof.config.root}")
    endpoints = prof.up(keep=keep)
    ui.err.print(f"\n[bold green]Sandbox is up[/] ({time.monotonic() - started:.1f}s)\n")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("MLflow", endpoints.mlflow_tracking_uri, "tracking URI, registry and UI")
    table.add_row("S3", endpoints.s3_endpoint_url, f"buckets: {', '.join(endpoints.buckets)}")
    table.add_row("PostgreSQL", endpoints.postgres_url.split("@")[-1], "MLflow's backend store; the inference log")
    ui.err.print(table)
    dir_flag = f" --dir {prof.config.dir}" if dir else ""
    ui.err.print(
        "\nUse it:\n"
        f'  eval "$(sandbox env{dir_flag})"   point mlflow, boto3 and the AWS CLI at it\n'
        f"  sandbox status{dir_flag}          health, pids, ports (--json for the credentials)\n"
        f"  sandbox down{dir_flag}            stop it; data is kept (--purge deletes it)"
    )


@app.command()
@handle_errors
def down(
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
    purge: Annotated[bool, typer.Option(help="Also delete the sandbox directory and all its data.")] = False,
) -> None:
    """Stop every process the sandbox started (idempotent); keep the data unless --purge."""
    prof = _profile(profile, dir, config, lenient=True)
    prof.down(purge=purge)


# --------------------------------------------------------------------------- inspect


@app.command()
@handle_errors
def status(
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, with endpoints and credentials.")] = False,
) -> None:
    """Per-service state (running / stopped / unhealthy), pid, port, URL."""
    prof = _profile(profile, dir, config, lenient=True)
    st = prof.status()
    if as_json:
        payload = {
            "profile": st.profile,
            "dir": st.dir,
            "state": st.overall,
            "services": [{**asdict(s), "state": s.state.value} for s in st.services],
            "endpoints": st.endpoints.model_dump() if st.endpoints else None,
            "deployments": [asdict(d) for d in st.deployments],
        }
        ui.out.print_json(json.dumps(payload))
        return
    if not st.services:
        ui.err.print(f"No sandbox in {st.dir} (profile {st.profile}). Start one with `sandbox up`.")
        raise typer.Exit(int(ExitCode.NOT_RUNNING))
    table = Table(title=f"Sandbox {st.dir} · profile {st.profile} · {st.overall}", title_justify="left")
    for column in ("service", "state", "pid", "port", "url"):
        table.add_column(column)
    colours = {"running": "green", "stopped": "dim", "unhealthy": "red"}
    for s in st.services:
        state = s.state.value
        table.add_row(s.name, f"[{colours[state]}]{state}[/]", str(s.pid or "-"), str(s.port or "-"), s.url or "-")
    ui.out.print(table)
    if st.deployments:
        _print_deployments(st.deployments)
    if st.overall != "running":
        raise typer.Exit(int(ExitCode.NOT_RUNNING))


def _print_deployments(deployments) -> None:
    table = Table(title="Model deployments", title_justify="left")
    for column in ("name", "kind", "state", "pid", "url", "model / variants"):
        table.add_column(column)
    colours = {"running": "green", "stopped": "dim", "unhealthy": "red"}
    for d in deployments:
        what = d.model_uri or ""
        what = f"{what} · {d.detail}" if what and d.detail else what or d.detail
        table.add_row(d.name, d.kind, f"[{colours[d.state]}]{d.state}[/]", str(d.pid or "-"), d.url or "-", what)
    ui.out.print(table)


@app.command()
@handle_errors
def env(profile: ProfileOpt = None, dir: DirOpt = None, config: ConfigOpt = None) -> None:
    """Print `export` lines: eval "$(sandbox env)" points MLflow/boto3/minio code at the sandbox."""
    prof = _profile(profile, dir, config)
    ui.out.print(prof.endpoints().shell_exports(), markup=False)


@app.command()
@handle_errors
def logs(
    service: Annotated[str, typer.Argument(help="Service name, e.g. postgres, s3, mlflow")],
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C to stop).")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines from the end to show.")] = 50,
) -> None:
    """Show a service's log."""
    from sandbox.process import tail

    prof = _profile(profile, dir, config, lenient=True)
    path = prof.log_file(service)
    if not path.exists():
        raise SandboxError(f"no log yet for '{service}' at {path}", hint="start the sandbox with `sandbox up`")
    text = tail(path, lines)
    if text:
        ui.out.print(text, markup=False, highlight=False)
    if follow:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            while True:
                chunk = handle.read()
                if chunk:
                    ui.out.file.write(chunk.decode(errors="replace"))
                    ui.out.file.flush()
                else:
                    time.sleep(0.3)


# --------------------------------------------------------------------------- serving


InferenceLogOpt = Annotated[
    bool,
    typer.Option(
        "--inference-log/--no-inference-log",
        help="Log each inference (features, prediction, model version) for drift monitoring",
    ),
]
AllowNanOpt = Annotated[
    bool,
    typer.Option(
        "--allow-nan",
        help="Pass NaN and infinite inputs to the model (for models that handle missing values); refused by default",
    ),
]


@serve_app.command("deploy")
@handle_errors
def serve_deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (a DNS label, as for an InferenceService)")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Registry URI: models:/NAME/VERSION or models:/NAME@ALIAS")
    ],
    batch_size: Annotated[int, typer.Option(help="Max rows per batched predict; 1 turns batching off")] = 1,
    batch_wait_ms: Annotated[float, typer.Option(help="Max wait for a batch to fill, in ms")] = 5.0,
    gpus: Annotated[int, typer.Option(help="GPUs to place it on (quota and placement as on Kubernetes)")] = 0,
    inference_log: InferenceLogOpt = True,
    allow_nan: AllowNanOpt = False,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve any MLflow model on KServe's V1, V2 REST and V2 gRPC protocols (redeploys if NAME exists)."""
    serving = _profile(profile, dir, config).serving()
    with ui.step(f"Deploying {name} from {model}") as step:
        step.note = serving.deploy(
            name,
            model,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            gpus=gpus,
            inference_log=inference_log,
            allow_nan=allow_nan,
        )
    endpoint = serving.inference_endpoints()[name]
    ui.err.print(f"  V1: POST {endpoint.v1_predict}\n  V2: POST {endpoint.v2_infer}\n  V2 gRPC: {endpoint.grpc}")


@serve_app.command("split")
@handle_errors
def serve_split(
    name: Annotated[str, typer.Argument(help="Name of the A/B endpoint")],
    variant: Annotated[
        list[str], typer.Option("--variant", help="LABEL=MODEL_URI:WEIGHT, e.g. a=models:/fraud-detector/1:80")
    ],
    sticky_header: Annotated[
        str | None, typer.Option(help="Route by a hash of this header's value (same user, same variant)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Micro-batching for every variant's server; 1 is off")] = 1,
    batch_wait_ms: Annotated[float, typer.Option(help="Max wait for a batch to fill, in ms")] = 5.0,
    inference_log: InferenceLogOpt = True,
    allow_nan: AllowNanOpt = False,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Put one URL in front of several model versions, split by weight."""
    from sandbox.serving.deployments import VariantSpec

    specs = [VariantSpec.parse(v) for v in variant]
    serving = _profile(profile, dir, config).serving()
    with ui.step(f"Deploying A/B split {name} ({', '.join(f'{v.label}:{v.weight:g}' for v in specs)})") as step:
        notes = serving.split(
            name,
            specs,
            sticky_header=sticky_header,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            inference_log=inference_log,
            allow_nan=allow_nan,
        )
        step.note = "; ".join(notes)
    endpoint = serving.inference_endpoints()[name]
    ui.err.print(
        f"  V1: POST {endpoint.v1_predict}\n  V2: POST {endpoint.v2_infer}\n"
        f"  the variant that answered is named in the x-model-variant response header; per-variant metrics at "
        f"{endpoint.url}/metrics"
    )


@serve_app.command("list")
@handle_errors
def serve_list(profile: ProfileOpt = None, dir: DirOpt = None, config: ConfigOpt = None) -> None:
    """List deployments with their state and URLs."""
    statuses = _profile(profile, dir, config).serving().statuses()
    if not statuses:
        ui.err.print("No deployments. Create one with `sandbox serve deploy NAME --model models:/NAME/VERSION`.")
        return
    _print_deployments(statuses)


@serve_app.command("url")
@handle_errors
def serve_url(
    name: Annotated[str, typer.Argument(help="Deployment or split name")],
    protocol: Annotated[str, typer.Option(help="v1 (predict) or v2 (infer)")] = "v1",
    all_urls: Annotated[
        bool, typer.Option("--all", help="Every URL: base, V1 predict, V2 infer, metrics (one per line)")
    ] = False,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print a deployment's inference URL, e.g. curl ... "$(sandbox serve url fraud)"."""
    if protocol not in ("v1", "v2"):
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use --protocol v1 or --protocol v2")
    inference = _profile(profile, dir, config).endpoints().inference
    if name not in inference:
        raise ConfigError(
            f"no deployment named {name!r} (deployed: {', '.join(inference) or 'none'})",
            hint="see `sandbox serve list`; deploy one with `sandbox serve deploy NAME --model models:/NAME/VERSION`",
        )
    endpoint = inference[name]
    if all_urls:
        lines = [
            f"url {endpoint.url}",
            f"v1 {endpoint.v1_predict}",
            f"v2 {endpoint.v2_infer}",
            f"metrics {endpoint.url}/metrics",
        ]
    else:
        lines = [endpoint.v1_predict if protocol == "v1" else endpoint.v2_infer]
    ui.out.print("\n".join(lines), markup=False, highlight=False)


@serve_app.command("undeploy")
@handle_errors
def serve_undeploy(
    name: Annotated[str, typer.Argument(help="Deployment or split name")],
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop a deployment (and, for a split, its variants) and forget it."""
    serving = _profile(profile, dir, config).serving()
    with ui.step(f"Undeploying {name}") as step:
        step.note = f"removed {', '.join(serving.undeploy(name))}"


# --------------------------------------------------------------------------- scenarios

ScenariosDirOpt = Annotated[
    list[Path] | None, typer.Option("--scenarios-dir", help="Another folder of scenario files (repeatable)")
]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here (for CI)")]
ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="Write checklist.md and checklist.html into this folder")
]


@scenario_app.command("list")
@handle_errors
def scenario_list(scenarios_dir: ScenariosDirOpt = None) -> None:
    """List the scenarios, the checklist item each proves and the capabilities it needs."""
    from sandbox.scenarios import discover

    table = Table(title="Scenarios", title_justify="left")
    for column in ("name", "checklist item", "needs", "file"):
        table.add_column(column)
    for item in discover(scenarios_dir).values():
        table.add_row(item.name, item.checklist, ", ".join(item.needs) or "-", Path(item.source).name)
    ui.out.print(table)


@scenario_app.command("run")
@handle_errors
def scenario_run(
    names: Annotated[list[str] | None, typer.Argument(help="Scenarios to run [default: all]")] = None,
    junit: JunitOpt = None,
    report: ReportOpt = None,
    scenarios_dir: ScenariosDirOpt = None,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run scenarios against the running stack; exit 1 if any fails."""
    _run_scenarios(names, junit, report, scenarios_dir, profile, dir, config)


@app.command()
@handle_errors
def checklist(
    junit: JunitOpt = None,
    report: ReportOpt = None,
    scenarios_dir: ScenariosDirOpt = None,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run every scenario and print the production checklist: ✓ / ✗ / skipped with evidence."""
    _run_scenarios(None, junit, report, scenarios_dir, profile, dir, config)


def _run_scenarios(names, junit, report, scenarios_dir, profile, dir, config) -> None:
    import os

    from sandbox.scenarios import Outcome, discover, run_scenario
    from sandbox.scenarios.reports import MARKS, write_html, write_junit, write_markdown

    # Scenarios link their MLflow runs in the report; MLflow's own "View run" lines would only clutter.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A broken stack should fail a scenario in seconds, not after MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    registry = discover(scenarios_dir)
    unknown = [n for n in names or [] if n not in registry]
    if unknown:
        raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}", hint=f"choose from: {', '.join(registry)}")
    selected = [registry[n] for n in names] if names else list(registry.values())
    prof = _profile(profile, dir, config)
    endpoints = prof.status().endpoints
    if endpoints is None:
        raise NotRunningError(f"no sandbox in {prof.config.root}", hint="start one with `sandbox up`")
    results = []
    for item in selected:
        with ui.step(f"scenario {item.name}: {item.title}") as step:
            result = run_scenario(item, endpoints, prof.serving, prof.scheduler)
            step.note = result.outcome.value + (f" · {result.reason}" if result.reason else "")
            step.failed = result.outcome == Outcome.FAILED
        results.append(result)

    table = Table(title=f"Production checklist · profile {endpoints.profile}", title_justify="left")
    for column in ("", "checklist item", "scenario", "time", "evidence / reason"):
        table.add_column(column)
    colours = {Outcome.PASSED: "green", Outcome.FAILED: "red", Outcome.SKIPPED: "yellow"}
    for r in results:
        text = r.reason if r.outcome != Outcome.PASSED else (r.evidence[0] if r.evidence else "")
        table.add_row(f"[{colours[r.outcome]}]{MARKS[r.outcome]}[/]", r.checklist, r.name, f"{r.seconds:.1f}s", text)
    ui.out.print(table)
    if junit:
        write_junit(results, junit)
        ui.err.print(f"JUnit XML: {junit}")
    if report:
        write_markdown(results, report / "checklist.md", profile=endpoints.profile)
        write_html(results, report / "checklist.html", profile=endpoints.profile)
        ui.err.print(f"Reports: {report / 'checklist.html'}, {report / 'checklist.md'}")
    failed = [r.name for r in results if r.outcome == Outcome.FAILED]
    if failed:
        ui.err.print(f"[red]{len(failed)} scenario(s) failed[/]: {', '.join(failed)}")
        raise typer.Exit(int(ExitCode.FAILED))


# --------------------------------------------------------------------------- gpu


@gpu_app.command("status")
@handle_errors
def gpu_status(
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
) -> None:
    """Nodes (fake and real GPUs), what runs where, pending workloads and quota use."""
    from sandbox.gpu.inventory import QUOTA_RESOURCES
    from sandbox.gpu.quantity import format_quantity

    cluster = _profile(profile, dir, config).scheduler().snapshot()
    if as_json:
        payload = {
            "nodes": [n.model_dump() | {"labels": n.all_labels()} for n in cluster.nodes.values()],
            **cluster.to_dict(),
            "quotas": [{**q.model_dump(), "used": cluster.quota_used(q.namespace)} for q in cluster.quotas],
        }
        ui.out.print_json(json.dumps(payload, default=str))
        return
    nodes = Table(title="Nodes", title_justify="left")
    for column in ("node", "GPUs (used/total)", "product", "cpu", "memory", "taints", "real"):
        nodes.add_column(column)
    for node in cluster.nodes.values():
        used = cluster.used_on(node.name)
        nodes.add_row(
            node.name,
            f"{len(cluster.devices_used_on(node.name))}/{node.gpus}",
            node.all_labels().get("nvidia.com/gpu.product", "-"),
            f"{format_quantity(used.get('cpu', 0), 'cpu')}/{node.cpu}",
            f"{format_quantity(used.get('memory', 0), 'memory')}/{node.memory}",
            ", ".join(map(str, node.taints)) or "-",
            "yes" if node.real else "fake",
        )
    ui.out.print(nodes)
    workloads = Table(title="Workloads", title_justify="left")
    for column in ("namespace/name", "state", "node", "devices", "reason"):
        workloads.add_column(column)
    for key, p in cluster.placements.items():
        state = "Running" if p.node else "Pending"
        workloads.add_row(key, state, p.node or "-", ",".join(map(str, p.devices)) or "-", p.reason)
    ui.out.print(workloads)
    quotas = Table(title="Quotas", title_justify="left")
    for column in ("namespace/name", "resource", "used", "hard"):
        quotas.add_column(column)
    for quota in cluster.quotas:
        used = cluster.quota_used(quota.namespace)
        for resource, hard in quota.limits().items():
            unit = QUOTA_RESOURCES[resource]
            quotas.add_row(
                f"{quota.namespace}/{quota.name}",
                resource,
                format_quantity(used.get(resource, 0), unit),
                format_quantity(hard, unit),
            )
    ui.out.print(quotas)


@gpu_app.command("submit")
@handle_errors
def gpu_submit(
    spec: Annotated[Path, typer.Argument(help="YAML workload: name, namespace, requests, limits, tolerations, ...")],
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Admit and place a Pod-like workload; prints Scheduled (with devices), Pending (why) or Rejected."""
    import yaml
    from pydantic import ValidationError

    from sandbox.gpu import Workload

    try:
        workload = Workload(**(yaml.safe_load(spec.read_text()) or {}))
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ConfigError(f"cannot read workload {spec}: {exc}", hint="see the README's GPU section") from None
    decision = _profile(profile, dir, config).scheduler().submit(workload)
    ui.out.print_json(json.dumps(asdict(decision)))
    if decision.status == "Rejected":
        raise typer.Exit(int(ExitCode.USAGE))


@gpu_app.command("release")
@handle_errors
def gpu_release(
    name: Annotated[str, typer.Argument(help="Workload name")],
    namespace: Annotated[str, typer.Option(help="Its namespace")] = "default",
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove a workload; pending ones that now fit are scheduled and printed."""
    try:
        started = _profile(profile, dir, config).scheduler().release(name, namespace)
    except KeyError:
        raise NotRunningError(f"no workload {namespace}/{name}", hint="see `sandbox gpu status`") from None
    ui.out.print_json(json.dumps([asdict(d) for d in started]))


@gpu_app.command("render")
@handle_errors
def gpu_render(
    out: Annotated[Path | None, typer.Option(help="Write the files here instead of printing the YAML")] = None,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The kind profile's objects from the inventory: kind config, GPU node patches, ResourceQuota, LimitRange."""
    import yaml

    from sandbox.gpu import render

    gpu_config = _profile(profile, dir, config).config.gpu
    if out is None:
        ui.out.print(render.render_all(gpu_config), markup=False, highlight=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "kind-config.yaml").write_text(yaml.safe_dump(render.kind_config(gpu_config), sort_keys=False))
    (out / "quotas.yaml").write_text(yaml.safe_dump_all(render.quota_objects(gpu_config), sort_keys=False))
    for node in (n for n in gpu_config.nodes if n.gpus and not n.real):
        (out / f"gpu-patch-{node.name}.json").write_text(json.dumps(render.gpu_capacity_patch(node)))
    ui.err.print(f"Wrote the kind config, quotas and GPU node patches to {out}")


# --------------------------------------------------------------------------- load tests


@app.command()
@handle_errors
def loadtest(
    target: Annotated[str, typer.Argument(help="A deployed name, or a V1/V2 inference URL (e.g. a staging endpoint)")],
    users: Annotated[int, typer.Option("--users", "-u", help="Concurrent users (closed loop)")] = 10,
    spawn_rate: Annotated[float, typer.Option("--spawn-rate", "-r", help="Users started per second")] = 10,
    duration: Annotated[str, typer.Option("--duration", "-t", help="How long, e.g. 30s, 2m")] = "30s",
    slo: Annotated[str | None, typer.Option(help="Gates, e.g. 'p95<200ms,p99<500ms,error_rate<1%,rps>50'")] = None,
    baseline: Annotated[Path | None, typer.Option(help="A previous summary.json to compare with")] = None,
    baseline_tolerance: Annotated[float, typer.Option(help="Allowed regression against the baseline, in %")] = 10,
    report: Annotated[Path | None, typer.Option(help="Report folder [default: reports/loadtest-TARGET-TIME]")] = None,
    processes: Annotated[int, typer.Option(help="Locust worker processes (more load per machine)")] = 1,
    protocol: Annotated[str | None, typer.Option(help="v1 or v2 [default: v1, or the URL's]")] = None,
    data: Annotated[Path | None, typer.Option(help="Sample dataset (CSV of feature columns) for payloads")] = None,
    rows_per_request: Annotated[int, typer.Option(help="Rows in each request")] = 1,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Load-test an inference endpoint with Locust; SLO and baseline gates set the exit code."""
    from sandbox import loadtest as lt

    if protocol not in (None, "v1", "v2"):
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use v1 or v2")
    if rows_per_request < 1 or rows_per_request > 256:
        raise ConfigError("--rows-per-request must be between 1 and 256", hint="e.g. --rows-per-request 1")
    endpoints = None
    if not target.startswith(("http://", "https://")):
        endpoints = _profile(profile, dir, config).endpoints()
    resolved = lt.resolve_target(target, endpoints, protocol)
    options = lt.LoadTestOptions(
        users=users,
        spawn_rate=spawn_rate,
        duration_s=lt.parse_duration(duration),
        slo=slo,
        baseline=baseline,
        baseline_tolerance=baseline_tolerance / 100,
        processes=processes,
        data=data,
        rows_per_request=rows_per_request,
    )
    if slo:
        from sandbox.loadtest.slo import parse_slo

        parse_slo(slo)  # a typo fails now, not after the run
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_dir = report or Path("reports") / f"loadtest-{re.sub(r'[^A-Za-z0-9_.-]+', '_', resolved.model_name)}-{stamp}"
    title = (
        f"Load test: {users} users on {resolved.host} ({resolved.protocol}, model {resolved.model_name}) for {duration}"
    )
    with ui.step(title) as step:
        summary = lt.run(resolved, options, report_dir)
        step.note = f"{summary['requests']} requests"
    _print_loadtest(summary, report_dir)
    if not summary["passed"]:
        raise typer.Exit(int(ExitCode.SLO_FAILED))


def _print_loadtest(summary: dict, report_dir: Path) -> None:
    table = Table(title="Results", title_justify="left")
    for column in ("requests", "failures", "req/s", "p50", "p90", "p95", "p99", "max"):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary["requests"]),
        str(summary["failures"]),
        f"{summary['rps']:.1f}",
        *(f"{summary[k]:.0f} ms" for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")),
    )
    ui.out.print(table)
    if summary["errors"]:
        ui.out.print("Errors: " + ", ".join(f"{kind} x{count}" for kind, count in summary["errors"].items()))
    gates = summary["slo"] + summary["baseline"]
    if gates:
        verdicts = Table(title="Gates", title_justify="left")
        for column in ("gate", "observed", "limit", "verdict", "by"):
            verdicts.add_column(column)
        for v in gates:
            verdicts.add_row(
                v["objective"],
                f"{v['observed']:.1f}{v['unit']}",
                f"{v['threshold']:.1f}{v['unit']}",
                "[green]pass[/]" if v["passed"] else "[red]FAIL[/]",
                v["margin"],
            )
        ui.out.print(verdicts)
    if summary["generator_saturated"]:
        ui.err.print(
            f"[yellow]warning:[/] the load generator's CPU peaked at {summary['generator_cpu_percent']['max']:.0f}%: "
            "these figures measure the generator, not the server; use --processes N or another machine"
        )
    verdict = "[green]PASSED[/]" if summary["passed"] else "[red]FAILED[/]"
    ui.err.print(f"{verdict} · report: {report_dir}/summary.html (Locust's: locust_report.html, summary.json, CSVs)")


# --------------------------------------------------------------------------- monitoring


SinceOpt = Annotated[
    str | None, typer.Option(help="Compare live rows from this far back, e.g. 15m [default: monitoring.window_s]")
]


def _since(since: str | None):
    from datetime import UTC, datetime, timedelta

    from sandbox.loadtest import parse_duration

    return datetime.now(UTC) - timedelta(seconds=parse_duration(since)) if since else None


def _print_drift(check) -> None:
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


@monitor_app.command("check")
@handle_errors
def monitor_check(
    model: Annotated[str, typer.Argument(help="Registered model name, as its inferences are logged")],
    version: Annotated[
        str | None, typer.Option(help="Model version [default: the one that answered most recently]")
    ] = None,
    since: SinceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    log_mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the check as an MLflow run")] = True,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """One drift check: recent inferences against the training reference, per feature (exit 7 on drift)."""
    from sandbox.monitoring.checks import check_drift, report_dict

    prof = _profile(profile, dir, config)
    check = check_drift(
        prof.endpoints(), model, prof.config.monitoring, version=version, since=_since(since), log_to_mlflow=log_mlflow
    )
    if as_json:
        ui.out.print_json(json.dumps(report_dict(check)))
    else:
        _print_drift(check)
    if check.alarm:
        raise typer.Exit(int(ExitCode.DRIFT))


TrainingDataOpt = Annotated[
    str | None, typer.Option(help="Labelled CSV to train on, s3://BUCKET/KEY or a path [monitoring.retraining]")
]
EvalDataOpt = Annotated[
    str | None, typer.Option(help="Fresh labelled CSV to score challenger and champion on [monitoring.retraining]")
]
RedeployOpt = Annotated[
    str | None, typer.Option(help="Deployment to redeploy on promotion [default: the model's name]")
]
MarginOpt = Annotated[float | None, typer.Option(help="Accuracy the challenger must gain to be promoted")]


def _retraining(prof: Profile, training_data, eval_data, deployment, margin):
    from sandbox.monitoring.retraining import Retrainer

    policy = prof.config.monitoring.retraining.model_copy(
        update={
            k: v
            for k, v in {
                "training_data": training_data,
                "eval_data": eval_data,
                "deployment": deployment,
                "margin": margin,
            }.items()
            if v is not None
        }
    )
    folder = prof.config.root / "monitoring"
    retrainer = Retrainer(
        prof.endpoints(), folder / "retraining", serving=prof.serving(), decision_log=folder / "decisions.log"
    )
    return policy, retrainer


def _print_decision(decision) -> None:
    mark = "[green]✓ promoted[/]" if decision.promoted else "[yellow]✗ not promoted[/]"
    ui.out.print(f"{mark} {decision.model_name} v{decision.challenger_version}: {decision.reason}")
    if decision.redeployed:
        ui.out.print(f"  redeployed {decision.redeployed}")
    ui.err.print(f"  recorded: MLflow experiment 'retraining', run {decision.mlflow_run_id}")


@monitor_app.command("retrain")
@handle_errors
def monitor_retrain(
    model: Annotated[str, typer.Argument(help="Registered model name")],
    training_data: TrainingDataOpt = None,
    eval_data: EvalDataOpt = None,
    deployment: RedeployOpt = None,
    margin: MarginOpt = None,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Retrain now (trigger: manual): pipeline, challenger, evaluation, promotion, redeploy."""
    from sandbox.monitoring.retraining import Trigger

    prof = _profile(profile, dir, config)
    policy, retrainer = _retraining(prof, training_data, eval_data, deployment, margin)
    with ui.step(f"Retraining {model} (manual)") as step:
        decision = retrainer.run(model, Trigger("manual", "sandbox monitor retrain"), policy)
        step.note = "promoted" if decision.promoted else "champion kept"
    _print_decision(decision)


def _watch_once(model, endpoints, settings, metrics, policy, retrainer, last_retrained: dict[str, float]) -> None:
    """One check of one model, its gauges, and (with a policy) a retraining if the policy asks."""
    from sandbox.monitoring.checks import check_drift
    from sandbox.monitoring.retraining import decide

    check = check_drift(endpoints, model, settings)
    metrics.update(check)
    ui.out.print(f"{time.strftime('%H:%M:%S')} {check.summary()}")
    if policy is None:
        return
    now = time.time()
    trigger = decide(
        policy,
        now=now,
        drift=check,
        last_retrained_at=last_retrained.get(model),
        data_version=retrainer.data_version(policy.training_data) if policy.training_data else None,
        champion_data_version=retrainer.champion_data_version(model),
    )
    if trigger is None:
        return
    ui.out.print(f"  retraining {model}: {trigger.kind} ({trigger.detail})")
    last_retrained[model] = now  # set first: a failing pipeline waits out the cooldown before the next try
    decision = retrainer.run(model, trigger, policy)
    metrics.retrainings.labels(model, "promoted" if decision.promoted else "rejected").inc()
    _print_decision(decision)


@monitor_app.command("watch")
@handle_errors
def monitor_watch(
    models: Annotated[list[str], typer.Argument(help="Registered model name(s) to watch")],
    interval: Annotated[float | None, typer.Option(help="Seconds between checks [monitoring.interval_s]")] = None,
    iterations: Annotated[int, typer.Option(help="Stop after this many rounds (0: until Ctrl-C)")] = 0,
    retrain: Annotated[
        bool, typer.Option("--retrain/--no-retrain", help="Apply the retraining policy after each check")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT [monitoring.metrics_port]")
    ] = None,
    training_data: TrainingDataOpt = None,
    eval_data: EvalDataOpt = None,
    deployment: RedeployOpt = None,
    margin: MarginOpt = None,
    profile: ProfileOpt = None,
    dir: DirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check drift periodically, expose it as Prometheus metrics, and retrain when the policy says so."""
    from prometheus_client import start_http_server

    from sandbox.monitoring.checks import DriftMetrics
    from sandbox.state import LOOPBACK, PortMap, SandboxDir

    prof = _profile(profile, dir, config)
    settings = prof.config.monitoring
    endpoints = prof.endpoints()
    policy, retrainer = _retraining(prof, training_data, eval_data, deployment, margin) if retrain else (None, None)
    metrics = DriftMetrics()
    ports = PortMap(SandboxDir(prof.config.root))  # an automatic port is kept for the next watch
    port = ports.claim(
        "monitor.metrics",
        metrics_port if metrics_port is not None else settings.metrics_port,
        setting="monitoring.metrics_port or --metrics-port",
    )
    ports.save()
    server, _thread = start_http_server(port, addr=LOOPBACK, registry=metrics.registry)
    ui.err.print(
        f"Watching {', '.join(models)} every {interval or settings.interval_s:g}s; "
        f"metrics at http://{LOOPBACK}:{port}/metrics (Ctrl-C stops)"
    )
    last_retrained: dict[str, float] = {}
    rounds = 0
    try:
        while True:
            for model in models:
                try:
                    _watch_once(model, endpoints, settings, metrics, policy, retrainer, last_retrained)
                except SandboxError as exc:  # no traffic yet, a restarting stack, a failed pipeline: keep watching
                    ui.print_error(exc)
            rounds += 1
            if iterations and rounds >= iterations:
                return
            time.sleep(interval or settings.interval_s)
    finally:
        server.shutdown()


@app.command()
@handle_errors
def doctor(profile: ProfileOpt = None, dir: DirOpt = None, config: ConfigOpt = None) -> None:
    """Check what a profile needs on this machine and say what to install."""
    prof = _profile(profile, dir, config)
    checks = prof.preflight()
    table = Table(title=f"doctor · profile {prof.name}", title_justify="left")
    for column in ("", "check", "found", "fix"):
        table.add_column(column)
    for check in checks:
        mark = "[green]✓[/]" if check.ok else ("[red]✗[/]" if check.required else "[yellow]![/]")
        table.add_row(mark, check.name, check.detail, "" if check.ok else check.fix)
    ui.out.print(table)
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        ui.err.print(f"[red]{len(failed)} problem(s)[/]: {', '.join(c.name for c in failed)}")
        raise typer.Exit(int(ExitCode.PREFLIGHT))
    ui.err.print(f"[green]All checks passed[/] for the {prof.name} profile.")


if __name__ == "__main__":
    app()
