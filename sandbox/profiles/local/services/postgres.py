"""PostgreSQL: MLflow's backend store and the inference log's database.

A real server on 127.0.0.1 with password (SCRAM) authentication from the first
start; no Unix socket, no trust auth. As root it runs as an unprivileged system
user, because `postgres` refuses to run as root.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import PreflightError, ServiceStartError
from sandbox.files import PRIVATE_UMASK
from sandbox.net import LOOPBACK
from sandbox.profiles.local import provisioned
from sandbox.profiles.local.services.base import LocalService

# Holds the inference log (sandbox.serving.inference_log), next to MLflow's database.
MONITORING_DATABASE = "monitoring"
# Used when running as root and no `postgres` account exists; created on demand.
FALLBACK_USER = "mlsandbox"
# The markers of what `after_ready` made (its role and databases) and of the inference log's schema
# (`provisioned`): a warm start finds them and skips that work.
PROVISIONED_MARKER = "provisioned.json"
SCHEMA_MARKER = "inference_log_schema.json"
# Where the data goes as root when the sandbox dir's parents are closed to that user.
ROOT_FALLBACK_DATA = Path("/var/lib/ml-sandbox")


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    source: str  # "system", "bundled" or "configured"

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"

    def version(self) -> str:
        found = self.postgres.stat()  # the binary as it is now: an upgraded one is asked again
        return _server_version(self.postgres, (found.st_ino, found.st_mtime_ns))

    def major(self) -> str:
        return self.version().split(".")[0]


# Connections one MLflow worker may hold: SQLAlchemy's default pool (5, plus 10 overflow) for each of its
# engines (tracking, model registry, the auth app's).
_CONNECTIONS_PER_MLFLOW_WORKER = 45
# And the rest of the stack: one inference-log shipper per model server, the supervisor's and the CLI's
# probes, drift monitoring, scenarios and notebooks; with room to spare (PostgreSQL keeps 3 for superusers).
_OTHER_CONNECTIONS = 55


def memory_settings(mlflow_workers: int) -> dict[str, str]:
    """Settings for a small single-user sandbox: little memory held while idle, durability untouched.

    fsync, synchronous_commit and full_page_writes keep their defaults: what PostgreSQL acknowledged
    survives a kill -9 (tests/faults/test_inference_log_durability.py).
    """
    return {
        # The default is 128MB. A sandbox's MLflow metadata and inference log are a few MB to a few hundred;
        # the OS page cache keeps the rest, and each shared-buffer page a backend touches counts in its RSS.
        "shared_buffers": "32MB",
        # The default (try) would take huge pages reserved on the host for something else, when there are any.
        "huge_pages": "off",
        # Enough for every pool at once (MLflow workers and the rest above); the default, 100, is the floor.
        # A slot costs a few kB of shared memory, so a margin is cheap and running out is an outage.
        "max_connections": str(max(100, _CONNECTIONS_PER_MLFLOW_WORKER * mlflow_workers + _OTHER_CONNECTIONS)),
        # Per sort or hash, per query (PostgreSQL's default, said out loud): the sandbox's queries are small.
        "work_mem": "4MB",
        # Vacuum's and CREATE INDEX's budget, per autovacuum worker (default 64MB): the tables are small.
        "maintenance_work_mem": "32MB",
        # No LLVM JIT: it loads ~20 MB of code into a backend the first time a query looks costly (a drift scan
        # of the inference log) and compiles for longer than such a query takes.
        "jit": "off",
        # No parallel workers (each a backend of its own) for one query on a laptop's few cores.
        "max_parallel_workers_per_gather": "0",
        # WAL kept between checkpoints (default 1GB): disk, not memory; a sandbox writes little.
        "max_wal_size": "256MB",
    }


def _clear_stale_lock(lock: Path, *, wait_s: float = 10.0) -> None:
    """After a crash (a kill -9 of the postmaster), its lock file names a process that is gone, or a zombie not
    yet reaped, which PostgreSQL counts as running and refuses to start. Wait for it to go; when only a zombie or
    nothing is left, the lock is stale and goes too. A live postmaster's lock is left for PostgreSQL to refuse."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return  # no lock, or not one we can read: PostgreSQL decides
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return
        if time.monotonic() > deadline or not psutil.pid_exists(pid):
            lock.unlink(missing_ok=True)
            return
        time.sleep(0.1)  # a zombie: its parent may reap it yet


@functools.lru_cache(maxsize=8)
def _server_version(postgres: Path, stamp: tuple[int, int]) -> str:
    """`postgres --version`, asked once per binary (``stamp``: its inode and mtime), not once per use: `up` wants
    it for its ✓ line and for the data's check, and each asking is a process start."""
    out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, check=True)
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
    match = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", out.stdout)
    return match.group(1) if match else out.stdout.strip()


def _has_server(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "postgres"))


def _system_bin_dirs() -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    for tool in ("initdb", "postgres"):
        found = shutil.which(tool)
        if found:
            candidates.append(Path(found).resolve().parent)
    # Debian/Ubuntu keep server binaries off the PATH; newest major first.
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    candidates.extend(debian)
    candidates.extend(Path(p) for p in ("/opt/homebrew/bin", "/usr/local/bin"))
    return candidates


def _bundled_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("pgserver")  # not imported: it has import-time side effects
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


_INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@16), "
    "or `pip install pgserver` and set postgres.source: bundled"
)


def find_binaries(source: str, bin_dir: Path | None) -> PgBinaries:
    """Locate initdb/postgres according to ``postgres.source`` and ``postgres.bin_dir``."""
    if bin_dir is not None:
        if _has_server(bin_dir):
            return PgBinaries(bin_dir, "configured")
        raise PreflightError(
            f"no PostgreSQL server (initdb, postgres) in postgres.bin_dir={bin_dir}",
            hint="point postgres.bin_dir at the folder `pg_config --bindir` prints, or unset it",
        )
    if source in ("auto", "system"):
        for candidate in _system_bin_dirs():
            if _has_server(candidate):
                return PgBinaries(candidate, "system")
    if source in ("auto", "bundled"):
        bundled = _bundled_bin_dir()
        if bundled is not None and _has_server(bundled):
            return PgBinaries(bundled, "bundled")
    raise PreflightError(f"no PostgreSQL server binaries found (postgres.source={source})", hint=_INSTALL_HINT)


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Can ``uid`` reach ``path``: execute permission on every parent folder."""
    for parent in [*reversed(path.parents)]:
        try:
            st = parent.stat()
        except FileNotFoundError:
            return True  # the rest will be created by us
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid == uid:
            ok = mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = mode & stat.S_IXGRP
        else:
            ok = mode & stat.S_IXOTH
        if not ok:
            return False
    return True


class Postgres(LocalService):
    name = "postgres"
    title = "PostgreSQL"
    # SIGINT is PostgreSQL's "fast shutdown"; it then ends its own backends.
    stop_signal = signal.SIGINT
    signal_whole_group = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self._binaries: PgBinaries | None = None

    @property
    def binaries(self) -> PgBinaries:
        if self._binaries is None:
            cfg = self.ctx.config.postgres
            self._binaries = find_binaries(cfg.source, cfg.bin_dir)
        return self._binaries

    def describe(self) -> str:
        return f"PostgreSQL {self.binaries.version()} ({self.binaries.source}: {self.binaries.bin_dir})"

    # ---------------------------------------------------------------- where and as whom

    def run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        for user in ("postgres", FALLBACK_USER):
            try:
                pwd.getpwnam(user)
                return user
            except KeyError:
                continue
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
            check=True,
            capture_output=True,
        )
        return FALLBACK_USER

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def _cluster_dir(self) -> Path:
        """The real PGDATA: the data dir, or where its symlink points."""
        return self.data_dir.resolve() if self.data_dir.is_symlink() else self.data_dir

    def _in_tree_path(self) -> list[Path]:
        """The sandbox's own folders between its root and the cluster."""
        root = self.ctx.sandbox.root
        return [root, root / "services", self.dir]

    def traverse_dirs(self) -> list[Path]:
        """Folders PostgreSQL's user must pass through (search only) to reach a cluster kept in the sandbox.

        None unless we are root (only then does the server run as another user) and the cluster
        lives inside the sandbox rather than behind the symlink of ``_place_data_dir``.
        """
        if os.geteuid() != 0 or self.data_dir.is_symlink() or not self.data_dir.is_dir():
            return []
        return self._in_tree_path()

    def _place_data_dir(self, user: str | None) -> None:
        if self.data_dir.exists() or self.data_dir.is_symlink():
            return
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is None:
            self.data_dir.mkdir(mode=0o700)
            return
        entry = pwd.getpwnam(user)
        # The folders from the sandbox root down are ours to open for traversal; those above it are not.
        if _traversable_by(self.ctx.sandbox.root, entry.pw_uid, entry.pw_gid):
            for folder in self._in_tree_path():
                folder.chmod(0o711)  # search only: the user can pass through, not list or read
            self.data_dir.mkdir(mode=0o700)
        else:
            # The sandbox lives under a folder the server's user cannot enter (e.g. /root):
            # keep the cluster in a root-owned place it can reach, linked from the sandbox.
            key = hashlib.sha256(str(self.ctx.sandbox.root).encode()).hexdigest()[:16]
            target = ROOT_FALLBACK_DATA / key
            ROOT_FALLBACK_DATA.mkdir(parents=True, exist_ok=True)
            ROOT_FALLBACK_DATA.chmod(0o711)  # searchable by the server's user whatever our umask; not listable
            target.mkdir(mode=0o700, exist_ok=True)
            self.data_dir.symlink_to(target)
        os.chown(self._cluster_dir(), entry.pw_uid, entry.pw_gid)

    def prepare(self) -> str:
        binaries = self.binaries
        user = self.run_as()
        self._place_data_dir(user)
        pgdata = self._cluster_dir()
        version_file = pgdata / "PG_VERSION"
        if version_file.exists():
            have = version_file.read_text().strip()
            if have != binaries.major():
                raise ServiceStartError(
                    f"the data in {pgdata} is PostgreSQL {have}, but the server found is {binaries.major()}",
                    hint=f"set postgres.bin_dir to a PostgreSQL {have} install, "
                    "or start afresh with `sandbox down --purge`",
                )
            _clear_stale_lock(pgdata / "postmaster.pid")
            return ""
        secrets = self.ctx.secrets
        pwfile = pgdata.parent / f".pwfile-{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.postgres_superuser_password + "\n")
        drop: dict = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            drop = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        try:
            result = subprocess.run(
                [
                    str(binaries.initdb),
                    "--pgdata",
                    str(pgdata),
                    "--username",
                    secrets.postgres_superuser,
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                cwd=pgdata.parent,
                umask=PRIVATE_UMASK,
                **drop,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceStartError(
                f"initdb failed with code {result.returncode}",
                hint="read the output above; `sandbox down --purge` starts from an empty directory",
                details=(result.stdout + result.stderr)[-3000:],
            )
        return "initialised a new cluster"

    # ---------------------------------------------------------------- LocalService

    def port_keys(self) -> list[str]:
        return ["postgres"]

    def claim_ports(self) -> None:
        self.ctx.ports.claim("postgres", self.ctx.config.postgres.port, setting="postgres.port / --postgres-port")

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(self.binaries.postgres),
            "-D",
            str(self._cluster_dir()),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            # No Unix socket: clients use TCP with a password, and socket paths have length limits.
            "-c",
            "unix_socket_directories=",
            "-c",
            "password_encryption=scram-sha-256",
        ]
        for name, value in memory_settings(self.ctx.config.mlflow.workers).items():
            argv += ["-c", f"{name}={value}"]
        return argv, {}

    def _connect(self, dbname: str = "postgres"):
        import psycopg

        secrets = self.ctx.secrets
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=secrets.postgres_superuser,
            password=secrets.postgres_superuser_password,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def probe(self) -> None:
        with self._connect() as conn:
            conn.execute("SELECT 1").fetchone()

    def cluster_identity(self) -> str | None:
        """Which cluster this is: PG_VERSION is written once, by `initdb`; a new cluster has a new file."""
        try:
            found = (self._cluster_dir() / "PG_VERSION").stat()
        except OSError:
            return None
        return f"{found.st_dev}:{found.st_ino}:{found.st_mtime_ns}"

    def _provisioning(self) -> dict | None:
        """What `after_ready` makes, as its marker records it; None when the cluster cannot be told."""
        cluster = self.cluster_identity()
        if cluster is None:
            return None
        secrets = self.ctx.secrets
        return {
            "cluster": cluster,
            "role": secrets.mlflow_db_user,
            "password_sha256": provisioned.digest(secrets.mlflow_db_password),
            "databases": sorted({self.ctx.config.postgres.database, MONITORING_DATABASE}),
        }

    def after_ready(self) -> None:
        """The application role (its password set) and its two databases; skipped when this cluster has them."""
        from psycopg import sql

        marker, wanted = self.dir / PROVISIONED_MARKER, self._provisioning()
        if wanted is not None and provisioned.matches(marker, wanted):
            return
        provisioned.forget(marker)
        secrets = self.ctx.secrets
        database = self.ctx.config.postgres.database
        role = sql.Identifier(secrets.mlflow_db_user)
        with self._connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (secrets.mlflow_db_user,)).fetchone()
            verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
            conn.execute(
                sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(verb, role, sql.Literal(secrets.mlflow_db_password))
            )
            for name in (database, MONITORING_DATABASE):
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), role))
        if wanted is not None:
            provisioned.record(marker, wanted)

    def url(self) -> str | None:
        if self.port is None:
            return None
        return f"postgresql://{LOOPBACK}:{self.port}/{self.ctx.config.postgres.database}"

    def connection_url(self, driver: str = "") -> str:
        """The MLflow database URL with its credentials, e.g. ``driver="+psycopg"`` for SQLAlchemy."""
        s = self.ctx.secrets
        return (
            f"postgresql{driver}://{s.mlflow_db_user}:{s.mlflow_db_password}"
            f"@{LOOPBACK}:{self.port}/{self.ctx.config.postgres.database}"
        )

    def monitoring_url(self) -> str:
        """The inference log's database (same application role as MLflow's)."""
        s = self.ctx.secrets
        return f"postgresql://{s.mlflow_db_user}:{s.mlflow_db_password}@{LOOPBACK}:{self.port}/{MONITORING_DATABASE}"

    def purge_external_data(self) -> None:
        """Remove a cluster kept outside the sandbox dir (see ``_place_data_dir``)."""
        if self.data_dir.is_symlink():
            shutil.rmtree(self.data_dir.resolve(), ignore_errors=True)
