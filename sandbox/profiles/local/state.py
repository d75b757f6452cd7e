"""Everything a local sandbox keeps on disk, under one directory.

Layout::

    <dir>/sandbox.lock        held by `up` and `down`, so two never overlap
    <dir>/secrets.json        generated credentials, mode 0600
    <dir>/ports.json          ports chosen on first start, reused afterwards
    <dir>/services/<name>/    per service: service.pid, service.log, data/

Every file and folder in it is private to its owner (0600 / 0700): the CLI runs
with umask 077 (``use_private_umask``) and hands it to every process it starts,
and `up` tightens what an older sandbox left looser (``make_private``). The
private umask and ``write_private`` are `sandbox.files`'.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import stat
from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

from sandbox.errors import PortInUseError
from sandbox.files import make_private_folder, write_private
from sandbox.net import port_is_free
from sandbox.profiles import locking
from sandbox.profiles.base import generate_token
from sandbox.profiles.local.process import listener, marked_ports, reclaim_port, running_sandboxes
from sandbox.tracking_server import ADMIN_USER


class SandboxDir:
    """Paths inside one sandbox directory."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def lock_file(self) -> Path:
        return self.root / "sandbox.lock"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def home(self) -> str:
        """The sandbox's identity in its processes' environment (`process.Identity`)."""
        return str(self.root.resolve())

    def lock(self, command: str, *, releasable: bool = False) -> contextlib.AbstractContextManager:
        """This sandbox's lock (`exclusive_lock`), for `locking.locked` methods of objects that keep it."""
        return exclusive_lock(self, command, releasable=releasable)

    def service_dir(self, name: str) -> Path:
        return self.root / "services" / name

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> None:
        # Secrets and data live here: keep other users out. An existing dir keeps its mode: as root it
        # may be open for traversal to PostgreSQL's user (see Postgres.traverse_dirs); `up` tightens the rest.
        make_private_folder(self.root)


# --------------------------------------------------------------------------- permissions


def make_private(root: Path, *, traverse: Collection[Path] = (), dry_run: bool = False) -> list[Path]:
    """Take every group and other permission off ``root`` and everything under it; return what changed.

    For sandboxes made before files were private (or loosened by hand). Symbolic links are
    not followed. Folders in ``traverse`` keep search (x) permission for group and others, and
    nothing else, so that a server running as another user (PostgreSQL, when we are root) can
    pass through them to its data. ``dry_run`` only lists what is open (`sandbox status`).
    SeaweedFS makes each volume's `.vif` file 0644 itself, inside its 0700 folder: those
    are tightened by `up` but not reported.
    """
    keep_open = {Path(p) for p in traverse}
    changed: list[Path] = []

    def tighten(path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # a server removed it meanwhile (PostgreSQL's temporary files)
            return
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode)
        wanted = mode & ~0o077
        if path in keep_open and stat.S_ISDIR(st.st_mode):
            wanted |= 0o011
        if wanted != mode:
            if dry_run:
                if path.suffix != ".vif":
                    changed.append(path)
                return
            try:
                os.chmod(path, wanted)
            except FileNotFoundError:
                return
            changed.append(path)

    if not root.is_dir():
        return changed
    tighten(root)
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in (*dirs, *files):
            tighten(base / name)
    return changed


# --------------------------------------------------------------------------- lock


def exclusive_lock(sandbox: SandboxDir, command: str, *, releasable: bool = False) -> contextlib.AbstractContextManager:
    """Hold the sandbox lock while a command changes the sandbox, or refuse at once (exit 3).

    Every command that changes the sandbox takes it: `up`, `down`, `serve deploy|split|
    undeploy`, `monitor retrain`, `gpu submit|release`, the supervisor's restarts. It is
    `sandbox.profiles.locking`'s flock on `<dir>/sandbox.lock`: a crashed holder releases it,
    the file names the holder for the refusal, and it is re-entrant within one process.
    ``releasable``: see `locking.released_while_waiting` (a deploy, while its servers start).
    """
    return locking.exclusive_lock(sandbox.lock_file, command, folder=sandbox.root, releasable=releasable)


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Secrets:
    """Credentials generated once per sandbox. Nothing here is a default."""

    MLFLOW_ADMIN_USER: ClassVar[str] = ADMIN_USER  # MLflow's basic-auth admin

    postgres_superuser: str
    postgres_superuser_password: str
    mlflow_db_user: str
    mlflow_db_password: str
    s3_access_key: str
    s3_secret_key: str
    # Added after the first release: "" in an older sandbox's file until `load_or_create_secrets` fills it in.
    jupyter_token: str = ""  # JupyterLab's token
    mlflow_admin_password: str = ""  # MLflow's basic-auth admin (MLFLOW_ADMIN_USER)
    mlflow_flask_secret: str = ""  # MLflow's auth app's CSRF key (MLFLOW_FLASK_SERVER_SECRET_KEY)
    serving_token: str = ""  # the bearer token of model servers and routers (wire.SERVING_TOKEN_ENV)

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            postgres_superuser="sandbox_admin",
            postgres_superuser_password=generate_token(32),
            mlflow_db_user="mlflow",
            mlflow_db_password=generate_token(32),
            # S3 access keys are conventionally upper-case alphanumerics.
            s3_access_key="SBX" + secrets.token_hex(8).upper(),
            s3_secret_key=generate_token(40),
            jupyter_token=generate_token(48),
            mlflow_admin_password=generate_token(32),
            mlflow_flask_secret=generate_token(48),
            serving_token=generate_token(40),
        )


def load_or_create_secrets(sandbox: SandboxDir) -> Secrets:
    path = sandbox.secrets_file
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)  # someone loosened it; secrets stay private
        known = Secrets(**json.loads(path.read_text()))
        # A sandbox made before a secret existed: the new ones join, the others stay.
        missing = {key: value for key, value in asdict(Secrets.generate()).items() if not getattr(known, key)}
        if missing:
            known = replace(known, **missing)
            write_private(path, json.dumps(asdict(known), indent=2))
        return known
    sandbox.create()
    created = Secrets.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(created), handle, indent=2)
    return created


def read_secrets(sandbox: SandboxDir) -> Secrets | None:
    if not sandbox.secrets_file.exists():
        return None
    return Secrets(**json.loads(sandbox.secrets_file.read_text()))


# --------------------------------------------------------------------------- ports

# Automatic ports come from below Linux's ephemeral range (32768+), so outgoing
# connections never take them, and leave room for SeaweedFS's "+10000" gRPC rule.
_AUTO_PORT_RANGE = (15000, 22000)


class PortMap:
    """Ports per sandbox: fixed ones from config, automatic ones chosen once and kept.

    Keeping them stable means `sandbox env` output, saved URLs and clients holding a
    tracking URI survive a crash, a restart and a `down`/`up`: a port is never
    silently replaced; when another program holds it, starting fails naming it.
    A new port is never one that another running sandbox keeps (in its ports.json, or
    its processes' markers), even while nothing listens on it (a deployment it stopped
    and may start again), so two sandboxes side by side do not collide. A lost or
    corrupt `ports.json` is rebuilt from the ports the running processes were
    started with (their `ML_SANDBOX_PORTS` marker).
    """

    def __init__(self, sandbox: SandboxDir):
        self._home = sandbox.home
        self._file = sandbox.ports_file
        self._claimed: set[str] = set()  # keys this object set: what `save` writes over the file's
        self._others: set[int] | None = None  # `_kept_by_other_sandboxes`, once asked
        self._ports: dict[str, int] = self._read()
        if not self._ports:
            self._ports = marked_ports(sandbox.home) if sandbox.exists() else {}
            if self._ports:
                self.save()

    def _read(self) -> dict[str, int]:
        return _read_ports(self._file)

    def get(self, key: str) -> int | None:
        return self._ports.get(key)

    def as_dict(self) -> dict[str, int]:
        return dict(self._ports)

    def claim(self, key: str, configured: int, *, setting: str, pair_offset: int | None = None) -> int:
        """Return the port for ``key``; ``configured`` 0 means automatic.

        ``pair_offset`` asks for a port whose ``port + offset`` is free too.
        """
        if configured:
            if not port_is_free(configured):
                raise PortInUseError(
                    f"port {configured} ({key}) is already in use by another process",
                    hint=f"free it, or choose another port with {setting} (0 picks a free one)",
                )
            self._ports[key] = configured
            self._claimed.add(key)
            return configured
        current = self._ports.get(key)
        if current:
            for port in (current, *([current + pair_offset] if pair_offset else [])):
                # A straggler of our own (a crashed server's worker) is stopped: the port is reclaimed, not replaced.
                if not port_is_free(port) and not (reclaim_port(self._home, port) and port_is_free(port)):
                    raise PortInUseError(
                        f"port {port} ({key}), this sandbox's since it was made, is held by {_holder(port)}",
                        hint="stop that process and run the command again; a sandbox keeps its ports for"
                        " its whole life (`sandbox down --purge` starts over with new ones)",
                    )
            return current
        port = self._pick(pair_offset)
        self._ports[key] = port
        self._claimed.add(key)
        return port

    def _pick(self, pair_offset: int | None) -> int:
        taken = set(self._ports.values()) | set(self._read().values())  # and what another process saved since
        taken |= self._kept_by_other_sandboxes()
        candidates = list(range(*_AUTO_PORT_RANGE))
        random.shuffle(candidates)
        for port in candidates:
            if port in taken or (pair_offset and port + pair_offset in taken):
                continue
            if port_is_free(port) and (pair_offset is None or port_is_free(port + pair_offset)):
                return port
        raise PortInUseError("no free port left in 15000-22000", hint="stop other services or set ports explicitly")

    def _kept_by_other_sandboxes(self) -> set[int]:
        """The ports the other running sandboxes keep, found once per map (a scan of the processes)."""
        if self._others is None:
            self._others = set()
            for home, marked in running_sandboxes().items():
                if home != self._home:
                    self._others |= {*marked.values(), *_read_ports(SandboxDir(Path(home)).ports_file).values()}
        return self._others

    def save(self) -> None:
        """Write the map, merged with what the file holds now: another process of the sandbox (a scenario
        deploying beside another, the supervisor) may have saved ports since this map was read."""
        self._ports = {**self._ports, **self._read(), **{key: self._ports[key] for key in self._claimed}}
        write_private(self._file, json.dumps(self._ports, indent=2, sort_keys=True))


def _read_ports(path: Path) -> dict[str, int]:
    """A ports.json's map; empty when it is absent, corrupt or not ours to read."""
    try:
        raw = json.loads(path.read_text())
        return {str(key): int(port) for key, port in raw.items() if 0 < int(port) < 65536}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # absent or corrupt: rebuilt from what runs


def _holder(port: int) -> str:
    """Who listens on a loopback port, as well as this user may know."""
    proc = listener(port)
    try:
        return f"pid {proc.pid} ({proc.name()})" if proc is not None else "another process"
    except Exception:  # noqa: BLE001 - it exited meanwhile
        return "another process"
