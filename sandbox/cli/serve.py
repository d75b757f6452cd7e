"""`sandbox serve`: deploy models on KServe's protocols, A/B splits, list, URLs, undeploy."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from sandbox import ui
from sandbox.cli import render
from sandbox.cli.common import command
from sandbox.cli.options import AllowNanOpt, BatchWaitOpt, DeploymentNameOpt, InferenceLogOpt, Stack
from sandbox.errors import ConfigError
from sandbox.wire import SERVING_TOKEN_ENV

app = typer.Typer(help="Serve registered models on KServe's V1/V2 protocols; A/B splits.", no_args_is_help=True)


@command(app, "deploy")
def serve_deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (a DNS label, as for an InferenceService)")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Registry URI: models:/NAME/VERSION or models:/NAME@ALIAS")
    ],
    batch_size: Annotated[int, typer.Option(help="Max rows per batched predict; 1 turns batching off")] = 1,
    batch_wait_ms: BatchWaitOpt = 5.0,
    gpus: Annotated[int, typer.Option(help="GPUs to place it on (quota and placement as on Kubernetes)")] = 0,
    inference_log: InferenceLogOpt = True,
    allow_nan: AllowNanOpt = False,
    runtime: Annotated[
        str,
        typer.Option(
            help="sandbox: the project's model server (every profile); kserve-mlserver: KServe's stock MLflow "
            "runtime, V2 only (kind and cluster profiles)"
        ),
    ] = "sandbox",
    stack: Stack = Stack(),
) -> None:
    """Serve any MLflow model on KServe's V1, V2 REST and V2 gRPC protocols (redeploys if NAME exists)."""
    from sandbox.serving.specs import DeploymentSpec, validate_runtime

    validate_runtime(runtime)
    serving = stack.open().serving()
    with ui.step(f"Deploying {name} from {model}") as step:
        options = _server_options(batch_size, batch_wait_ms, inference_log, allow_nan)
        spec = DeploymentSpec.model(name, model, gpus=gpus, runtime=runtime, **options)
        step.note = "; ".join(serving.deploy(spec))
    endpoint = serving.inference_endpoints()[name]
    if endpoint.protocol != "v2":
        ui.err.print(f"  V1: POST {endpoint.v1_predict}")
    ui.err.print(f"  V2: POST {endpoint.v2_infer}" + (f"\n  V2 gRPC: {endpoint.grpc}" if endpoint.grpc else ""))


@command(app, "split")
def serve_split(
    name: Annotated[str, typer.Argument(help="Name of the A/B endpoint")],
    variant: Annotated[
        list[str], typer.Option("--variant", help="LABEL=MODEL_URI:WEIGHT, e.g. a=models:/fraud-detector/1:80")
    ],
    sticky_header: Annotated[
        str | None, typer.Option(help="Route by a hash of this header's value (same user, same variant)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Micro-batching for every variant's server; 1 is off")] = 1,
    batch_wait_ms: BatchWaitOpt = 5.0,
    inference_log: InferenceLogOpt = True,
    allow_nan: AllowNanOpt = False,
    stack: Stack = Stack(),
) -> None:
    """Put one URL in front of several model versions, split by weight."""
    from sandbox.serving.specs import DeploymentSpec, VariantSpec

    specs = [VariantSpec.parse(v) for v in variant]
    serving = stack.open().serving()
    with ui.step(f"Deploying A/B split {name} ({', '.join(f'{v.label}:{v.weight:g}' for v in specs)})") as step:
        options = _server_options(batch_size, batch_wait_ms, inference_log, allow_nan)
        notes = serving.deploy(DeploymentSpec.split(name, specs, sticky_header=sticky_header, **options))
        step.note = "; ".join(notes)
    endpoint = serving.inference_endpoints()[name]
    ui.err.print(
        f"  V1: POST {endpoint.v1_predict}\n  V2: POST {endpoint.v2_infer}\n"
        f"  the variant that answered is named in the x-model-variant response header; per-variant metrics at "
        f"{endpoint.url}/metrics"
    )


@command(app, "list")
def serve_list(stack: Stack = Stack()) -> None:
    """List deployments with their state and URLs."""
    statuses = stack.open().serving().statuses()
    if not statuses:
        ui.err.print("No deployments. Create one with `sandbox serve deploy NAME --model models:/NAME/VERSION`.")
        return
    render.deployments(statuses)


@command(app, "url")
def serve_url(
    name: DeploymentNameOpt,
    protocol: Annotated[str, typer.Option(help="v1 (predict), v2 (infer) or grpc (host:port of V2 gRPC)")] = "v1",
    all_urls: Annotated[
        bool, typer.Option("--all", help="Every URL: base, V1 predict, V2 infer, gRPC, metrics (one per line)")
    ] = False,
    token: Annotated[
        bool,
        typer.Option(
            "--token",
            help="Print the bearer token its requests need instead (nothing with serving.auth: none); "
            "`sandbox env` exports it as ML_SANDBOX_SERVING_TOKEN",
        ),
    ] = False,
    stack: Stack = Stack(),
) -> None:
    """Print a deployment's inference URL, e.g. curl ... "$(sandbox serve url fraud)"; how to authenticate: stderr."""
    if protocol not in ("v1", "v2", "grpc"):
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use --protocol v1, v2 or grpc")
    endpoints = stack.open().endpoints()
    inference = endpoints.inference
    if name not in inference:
        raise ConfigError(
            f"no deployment named {name!r} (deployed: {', '.join(inference) or 'none'})",
            hint="see `sandbox serve list`; deploy one with `sandbox serve deploy NAME --model models:/NAME/VERSION`",
        )
    endpoint = inference[name]
    if token:
        if endpoints.serving_token:
            ui.out.print(endpoints.serving_token, markup=False, highlight=False)
        else:
            ui.err.print("serving.auth is none: the model servers need no token", markup=False, highlight=False)
        return
    # The hint, unless this shell already holds the token (`eval "$(sandbox env)"` set it).
    if endpoints.serving_token and os.environ.get(SERVING_TOKEN_ENV) != endpoints.serving_token:
        grpc = " (gRPC: metadata authorization: Bearer ...)" if protocol == "grpc" or all_urls else ""
        ui.err.print(
            f'requests need -H "Authorization: Bearer ${SERVING_TOKEN_ENV}"{grpc}: eval "$(sandbox env)" sets it, '
            f"`sandbox serve url {name} --token` prints it",
            markup=False,
            highlight=False,
        )
    if all_urls:
        lines = [
            f"url {endpoint.url}",
            f"v1 {endpoint.v1_predict}",
            f"v2 {endpoint.v2_infer}",
            *([f"grpc {endpoint.grpc}"] if endpoint.grpc else []),
            f"metrics {endpoint.url}/metrics",
        ]
    elif protocol == "grpc":
        if not endpoint.grpc:
            raise ConfigError(
                f"{name!r} has no gRPC endpoint (a split's router is REST only)",
                hint=f"call a variant's own gRPC port: sandbox serve url {name}-LABEL --protocol grpc",
            )
        lines = [endpoint.grpc]
    else:
        lines = [endpoint.v1_predict if protocol == "v1" else endpoint.v2_infer]
    ui.out.print("\n".join(lines), markup=False, highlight=False)


@command(app, "undeploy")
def serve_undeploy(name: DeploymentNameOpt, stack: Stack = Stack()) -> None:
    """Stop a deployment (and, for a split, its variants) and forget it."""
    serving = stack.open().serving()
    with ui.step(f"Undeploying {name}") as step:
        step.note = f"removed {', '.join(serving.undeploy(name))}"


def _server_options(batch_size: int, batch_wait_ms: float, inference_log: bool, allow_nan: bool) -> dict:
    """What `serve deploy` and `serve split` give every model server they start."""
    return {
        "batch_size": batch_size,
        "batch_wait_ms": batch_wait_ms,
        "inference_log": inference_log,
        "allow_nan": allow_nan,
    }
