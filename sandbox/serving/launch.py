"""How the model server and the router are started: one type each, written out by whoever launches them (the
local profile's processes, the Kubernetes objects) and read back by their own `main()`.

`to_argv()` and `parse()` are inverses (`parse(args.to_argv()) == args`), so a flag is spelled and formatted in
one place, whatever starts the server.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from sandbox.net import LOOPBACK

# In a pod the servers bind every interface (the pod's network is their own); on a host they bind loopback.
BIND_HOST_ENV = "ML_SANDBOX_BIND_HOST"


def _default_host() -> str:
    return os.environ.get(BIND_HOST_ENV, LOOPBACK)


def _number(value: float) -> str:
    """1.0 → "1", 2.5 → "2.5", 0.1234567 → "0.1234567": the same text for the same value, on every launcher, and
    every digit of it (`parse` reads back the value written)."""
    text = repr(float(value))
    return text.removesuffix(".0")


@dataclass(frozen=True)
class ModelServerArgs:
    """`python -m sandbox.serving.model_server ...`: one model, served over REST (and V2 gRPC when a port is set)."""

    MODULE = "sandbox.serving.model_server"

    name: str
    model_uri: str
    port: int
    host: str = field(default_factory=_default_host)
    grpc_port: int | None = None  # None: gRPC off
    batch_size: int = 1
    batch_wait_ms: float = 5.0
    inference_log: bool = True
    allow_nan: bool = False

    def to_argv(self) -> list[str]:
        argv = ["--name", self.name, "--model-uri", self.model_uri, "--host", self.host, "--port", str(self.port)]
        if self.grpc_port is not None:
            argv += ["--grpc-port", str(self.grpc_port)]
        argv += ["--batch-size", str(self.batch_size), "--batch-wait-ms", _number(self.batch_wait_ms)]
        if not self.inference_log:
            argv.append("--no-inference-log")
        if self.allow_nan:
            argv.append("--allow-nan")
        return argv

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"python -m {cls.MODULE}", description="Serve one MLflow model.")
        parser.add_argument("--name", required=True)
        parser.add_argument("--model-uri", required=True)
        parser.add_argument("--host", default=None, help=f"default: ${BIND_HOST_ENV} or {LOOPBACK}")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--grpc-port", type=int, default=None, help="V2 gRPC port (none: gRPC off)")
        parser.add_argument("--batch-size", type=int, default=1)
        parser.add_argument("--batch-wait-ms", type=float, default=5.0)
        parser.add_argument("--allow-nan", action="store_true", help="pass NaN and infinities to the model")
        parser.add_argument("--no-inference-log", dest="inference_log", action="store_false")
        return parser

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> ModelServerArgs:
        args = cls.parser().parse_args(argv)
        return cls(
            name=args.name,
            model_uri=args.model_uri,
            port=args.port,
            host=args.host or _default_host(),
            grpc_port=args.grpc_port,
            batch_size=args.batch_size,
            batch_wait_ms=args.batch_wait_ms,
            inference_log=args.inference_log,
            allow_nan=args.allow_nan,
        )


@dataclass(frozen=True)
class RouteVariant:
    """One variant behind the router: `LABEL=BASE_URL/MODEL:WEIGHT`, e.g. `a=http://127.0.0.1:8001/ab-a:80`."""

    label: str
    base_url: str  # http://HOST:PORT
    model_name: str  # the name the variant's server knows the model by
    weight: float

    def to_arg(self) -> str:
        return f"{self.label}={self.base_url}/{self.model_name}:{_number(self.weight)}"

    @classmethod
    def parse(cls, text: str) -> RouteVariant:
        label, _, rest = text.partition("=")
        target, _, weight = rest.rpartition(":")
        base_url, _, model_name = target.rpartition("/")
        if not (label and base_url and model_name and weight):
            raise ValueError(f"bad variant {text!r}; expected LABEL=http://HOST:PORT/MODEL:WEIGHT")
        return cls(label, base_url, model_name, float(weight))


@dataclass(frozen=True)
class RouterArgs:
    """`python -m sandbox.serving.router ...`: an A/B split's router in front of its variants' servers."""

    MODULE = "sandbox.serving.router"

    name: str
    port: int
    variants: tuple[RouteVariant, ...]
    host: str = field(default_factory=_default_host)
    sticky_header: str | None = None

    def to_argv(self) -> list[str]:
        argv = ["--name", self.name, "--host", self.host, "--port", str(self.port)]
        for variant in self.variants:
            argv += ["--variant", variant.to_arg()]
        if self.sticky_header:
            argv += ["--sticky-header", self.sticky_header]
        return argv

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"python -m {cls.MODULE}", description="Route V1/V2 requests by weight.")
        parser.add_argument("--name", required=True)
        parser.add_argument("--host", default=None, help=f"default: ${BIND_HOST_ENV} or {LOOPBACK}")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--variant", action="append", required=True, type=RouteVariant.parse)
        parser.add_argument("--sticky-header")
        return parser

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> RouterArgs:
        args = cls.parser().parse_args(argv)
        return cls(
            name=args.name,
            port=args.port,
            variants=tuple(args.variant),
            host=args.host or _default_host(),
            sticky_header=args.sticky_header,
        )
