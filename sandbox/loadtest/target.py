"""What a load test hits and with what: the target (a deployed name or an inference URL) and its payload rows."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from sandbox import wire
from sandbox.endpoints import Endpoints
from sandbox.errors import ConfigError, NotRunningError


@dataclass
class Target:
    host: str  # http://host:port
    model_name: str
    protocol: str  # v1 | v2 | ab | mlflow (`mlflow models serve`, for comparisons)
    label: str  # what the user named
    # The serving token its requests carry (`Authorization: Bearer`): the sandbox's, for its own deployments.
    token: str | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return wire.bearer_headers(self.token)

    @property
    def wire_protocol(self) -> str:
        """The protocol its requests speak (`sandbox.wire`): the A/B router speaks V1."""
        return "v1" if self.protocol == "ab" else self.protocol


def default_report_dir(target: Target) -> Path:
    """reports/loadtest-MODEL-YYYYmmdd-HHMMSS, with the model name made safe for a file name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"loadtest-{re.sub(r'[^A-Za-z0-9_.-]+', '_', target.model_name)}-{stamp}"


def resolve_target(target: str, endpoints: Endpoints | None, protocol: str | None) -> Target:
    """A deployed name (from the sandbox's endpoints) or a V1/V2 URL. The sandbox's serving token goes with its
    own deployments, named or by URL, never to another server."""
    token = endpoints.serving_token if endpoints is not None else None
    if target.startswith(("http://", "https://")):
        for pattern, proto in ((wire.V1_PREDICT_URL, "v1"), (wire.V2_INFER_URL, "v2")):
            match = pattern.match(target.rstrip("/"))
            if match:
                own = endpoints is not None and _serves(endpoints, match["base"])
                return Target(match["base"], match["model"], protocol or proto, target, token if own else None)
        match = wire.INVOCATIONS_URL.match(target.rstrip("/"))
        if match:
            return Target(match["base"], "invocations", "mlflow", target)
        raise ConfigError(
            f"cannot tell the model from URL {target}",
            hint="give the full inference URL: http://HOST:PORT/v1/models/NAME:predict or .../v2/models/NAME/infer",
        )
    if endpoints is None or target not in endpoints.inference:
        known = ", ".join(endpoints.inference) if endpoints and endpoints.inference else "none"
        raise ConfigError(
            f"no deployment named {target!r} (deployed: {known})",
            hint="deploy it with `sandbox serve deploy`, or give a URL",
        )
    endpoint = endpoints.inference[target]
    if endpoint.kind == "split":
        if protocol == "v2":
            raise ConfigError("A/B load tests use the V1 protocol", hint="drop --protocol v2 for a split")
        return Target(endpoint.url, target, "ab", target, token)
    # A listed remote endpoint may be named apart from its model, and known to speak only one protocol.
    return Target(endpoint.url, endpoint.model_name or target, protocol or endpoint.protocol or "v1", target, token)


def _serves(endpoints: Endpoints, base: str) -> bool:
    """Whether ``base`` (http://HOST:PORT) is one of the sandbox's deployments."""
    return any(endpoint.url.rstrip("/") == base.rstrip("/") for endpoint in endpoints.inference.values())


def payload_rows(target: Target, data: Path | None, *, count: int = 256, seed: int = 0) -> list[list[float]]:
    """Rows from a sample dataset, or random rows shaped by the model's V2 metadata (its signature)."""
    if data is not None:
        import pandas as pd

        try:
            frame = pd.read_csv(data)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read sample data {data}: {exc}", hint="give a CSV with a header row") from None
        numeric = frame.select_dtypes("number")
        if numeric.empty:
            raise ConfigError(f"{data} has no numeric columns", hint="give the model's feature columns")
        width = _model_width(target)
        if width is not None and numeric.shape[1] != width:
            raise ConfigError(
                f"{data} has {numeric.shape[1]} numeric columns; the model expects {width}",
                hint="drop the label and id columns",
            )
        return numeric.head(count).to_numpy(dtype=float).tolist()
    width = _model_width(target)
    if width is None:
        raise ConfigError(
            f"cannot learn the input shape of {target.label} from its metadata",
            hint="pass a sample dataset with --data FILE.csv",
        )
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, width)).round(4).tolist()


_METADATA_TIMEOUT_S = 10


def _unreachable(target: Target, exc: httpx.TransportError) -> NotRunningError:
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer within {_METADATA_TIMEOUT_S}s"
    else:  # "[Errno 111] Connection refused" -> "connection refused"
        text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
        reason = text[:1].lower() + text[1:]
    where = target.label if target.label.startswith(("http://", "https://")) else f"{target.label} at {target.host}"
    return NotRunningError(
        f"the target {where} is unreachable: {reason}",
        hint="check the URL and that the server runs (`sandbox serve list` shows the sandbox's deployments)",
    )


def _model_width(target: Target) -> int | None:
    """Feature count from V2 model metadata (an A/B router answers with its variants' metadata).

    None when the server answers without usable metadata; a server that cannot be reached at
    all is an error, not a shape problem.
    """
    try:
        response = httpx.get(
            f"{target.host}{wire.v2_metadata_path(target.model_name)}",
            headers=target.headers,
            timeout=_METADATA_TIMEOUT_S,
            trust_env=False,
        )
    except httpx.TransportError as exc:
        raise _unreachable(target, exc) from None
    if response.status_code == 401:
        raise ConfigError(
            f"{target.label} requires a bearer token (its answer: {response.text[:200]})",
            hint="load-test the sandbox's deployment by its name (`sandbox serve list`), or its URL from "
            "`sandbox serve url`: either sends the sandbox's serving token",
        )
    try:
        response.raise_for_status()
        inputs = response.json().get("inputs") or []
    except (httpx.HTTPError, ValueError):
        return None
    if len(inputs) == 1 and len(inputs[0].get("shape", [])) == 2:
        return int(inputs[0]["shape"][1])
    return len(inputs) or None
