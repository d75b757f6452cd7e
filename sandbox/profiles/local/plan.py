"""`sandbox up --dry-run` on the local profile: `up`'s own actions, each title saying what it starts and where.

`LocalProfile.plan` builds the actions `up` runs (`LocalProfile.actions`) on services made from the configuration
and what the sandbox dir already records (`secrets.json`, `ports.json`, `deployments.json`), adds the supervisor
(which `up` starts last, after the actions), and `annotated` appends to each title what `up`'s ✓ line would say
runs there: the binary, the port (from the configuration, kept in `ports.json`, or chosen at start) and the
folder. Nothing is started, and nothing is written: not the sandbox dir, not its secrets, not its port map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from sandbox.actions import Action
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.profiles.local.services.base import LocalService, ServiceContext
from sandbox.profiles.local.services.mlflow_server import MLflowServer
from sandbox.profiles.local.services.postgres import MONITORING_DATABASE, Postgres
from sandbox.profiles.local.services.seaweedfs import SeaweedS3
from sandbox.profiles.local.serving import LocalProcessRuntime
from sandbox.profiles.local.state import PortMap, SandboxDir, Secrets, read_secrets
from sandbox.profiles.local.supervisor.handle import SupervisorHandle

# The titles of `up`'s two actions that are not a service's (`LocalProfile.actions`).
SCHEMA_TITLE = "Inference log schema (monitoring database)"
DEPLOYMENTS_TITLE = "Model deployments"

# What each configured port is called in sandbox.yaml.
_SETTINGS = {"postgres": "postgres.port", "s3": "s3.port", "mlflow": "mlflow.port", "notebooks": "notebooks.port"}


class KeptPorts(PortMap):
    """The port map as `ports.json` has it (or, without one, the running processes' markers), never written."""

    def save(self) -> None:
        return None


def planned_services(config: SandboxConfig, sandbox: SandboxDir) -> tuple[Postgres, SeaweedS3, MLflowServer]:
    """The three core services as `up` would make them, without creating the sandbox or its secrets."""
    secrets = read_secrets(sandbox) or Secrets.generate()  # a new sandbox's: only their shape is used, never written
    ctx = ServiceContext(config, sandbox, secrets, KeptPorts(sandbox))
    postgres, s3 = Postgres(ctx), SeaweedS3(ctx)
    return postgres, s3, MLflowServer(ctx, postgres, s3)


def notes(services: Sequence[LocalService], config: SandboxConfig, sandbox: SandboxDir) -> dict[str, str]:
    """What each action of the plan starts and where, by its title."""
    found = {svc.title: service_note(svc) for svc in services}
    found[SCHEMA_TITLE] = f"table inference_log in PostgreSQL's {MONITORING_DATABASE!r} database"
    found[DEPLOYMENTS_TITLE] = deployments_note(sandbox, services[0].ctx.ports)
    if config.supervisor.enabled:
        found[SupervisorHandle.title] = (
            f"a process of the sandbox, no port, in {SupervisorHandle(sandbox).dir}; "
            f"a check every {config.supervisor.interval_s:g}s"
        )
    else:
        found[SupervisorHandle.title] = "off (supervisor.enabled: false): not started"
    return found


def service_note(svc: LocalService) -> str:
    """The binary (as `up`'s ✓ line names it), the main port and the folder."""
    try:
        what = svc.describe()
    except SandboxError as exc:  # no binary yet: `up` would stop here; the plan says so
        what = f"{exc.message}: `up` would stop here (`sandbox doctor` says what to do)"
    return ", ".join(part for part in (what, port_note(svc), f"in {svc.dir}") if part)


def port_note(svc: LocalService) -> str:
    key, *others = svc.port_keys()
    configured = getattr(svc.ctx.config, key).port if key in _SETTINGS else 0
    kept = svc.ctx.ports.get(key)
    if configured:
        text = f"port {configured} ({_SETTINGS[key]})"
    elif kept:
        text = f"port {kept} (kept in ports.json)"
    else:
        text = "a free port chosen at start"
    if others:
        text += f" and {len(others)} more ports of its own"
    return text


def deployments_note(sandbox: SandboxDir, ports: PortMap) -> str:
    """The recorded deployments `up` restores, model servers and routers on the ports they had."""
    records = LocalProcessRuntime(sandbox, ports).records() if sandbox.exists() else {}
    if not records:
        return "none recorded"
    listed = []
    for name, record in records.items():
        port = ports.get(f"deploy.{name}")
        listed.append(f"{name} ({record.kind}, port {port})" if port else f"{name} ({record.kind})")
    return "restores " + ", ".join(listed)


def annotated(actions: Sequence[Action], notes: Mapping[str, str]) -> list[Action]:
    """Each action with `` · note`` after its title, as `up`'s ✓ lines put a note after theirs (and the titles
    its `after` names likewise, so that they still name those actions)."""

    def title(plain: str) -> str:
        return f"{plain} · {notes[plain]}" if plain in notes else plain

    return [
        dataclasses.replace(
            action,
            title=title(action.title),
            after=None if action.after is None else tuple(title(t) for t in action.after),
        )
        for action in actions
    ]
