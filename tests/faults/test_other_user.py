"""Nobody but the sandbox's owner gets into its object store, and S3 with the keys still works.

Every local user can reach 127.0.0.1, so a port is only as private as the credentials it asks
for. As another local system user (created here; the tests need root), these tests try to read
a known object and an MLflow artifact, and to write an object, through every port SeaweedFS
listens on but S3's: plain HTTP, TLS without a client certificate and TLS with a certificate of
the user's own making, and gRPC the same three ways. The ports come from the sandbox's
ports.json and from the weed process's own listening sockets, so a port added later is probed
too. Its Unix sockets and its files must be closed to that user as well.

Where a probe must be refused, a control shows the same request succeeding with the owner's
credentials, so a refusal is the protection at work and not a probe that cannot work.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import ssl
import subprocess
import sys
import sysconfig
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from minio import Minio

pytestmark = pytest.mark.integration

PROBE_USER = "sandbox-probe"
# gRPC answers meaning the call never reached a service: the connection or the caller was refused.
REFUSED_GRPC = {"UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED"}

# Run as the probe user with its own interpreter, so nothing of root's (files, descriptors but the
# sandbox folder's) comes along. Input on stdin as JSON; a JSON report on stdout.
PROBE = r"""
import json, os, socket, ssl, sys, tempfile
import grpc, httpx

cfg = json.load(sys.stdin)
marks = [m.encode() for m in cfg["marks"]]
report = {"tried": 0, "refused": 0, "accepted": [], "sockets_connected": [], "files_readable": [], "uid": os.getuid()}


def accepted(what, detail):
    report["accepted"].append(f"{what}: {detail}")


def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def msg(*fields):
    out = b""
    for number, value in fields:
        if isinstance(value, int):
            out += varint(number << 3) + varint(value)
        else:
            value = value.encode() if isinstance(value, str) else value
            out += varint(number << 3 | 2) + varint(len(value)) + value
    return out


# ssl loads a client certificate only from files: written to a folder that goes as soon as it is loaded.
own = ssl.create_default_context(cadata=cfg["ca"])
with tempfile.TemporaryDirectory() as tmp:
    foreign_cert, foreign_key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    with open(foreign_cert, "w") as fh:
        fh.write(cfg["foreign_cert"])
    with open(foreign_key, "w") as fh:
        fh.write(cfg["foreign_key"])
    own.load_cert_chain(foreign_cert, foreign_key)
ca = cfg["ca"].encode()

# ---------------------------------------------------------------- HTTP
known = cfg["objects"]  # [[bucket, key], ...]
fid, write_key = cfg["fid"], cfg["write_key"]
requests = [("GET", f"/buckets/{b}/{k}", None) for b, k in known]
requests += [
    ("GET", "/", None),
    ("GET", "/buckets/data/", None),
    ("GET", f"/{fid}", None),
    ("GET", f"/dir/lookup?fileId={fid}&read=yes", None),
    ("GET", "/dir/assign", None),
    ("POST", "/dir/assign", None),
    ("GET", "/dir/status", None),
    ("GET", "/metrics", None),
    ("GET", "/health", None),
    ("PUT", f"/buckets/data/{write_key}", b"written by another user"),
    ("POST", f"/buckets/data/{write_key}", {"file": ("x.txt", b"written by another user")}),
    ("POST", f"/{fid}", {"file": ("x.txt", b"written by another user")}),
    ("PUT", f"/{fid}", b"written by another user"),
]
clients = {
    "http": httpx.Client(timeout=5, trust_env=False),
    "https, no client certificate": httpx.Client(
        timeout=5, trust_env=False, verify=ssl.create_default_context(cadata=cfg["ca"])
    ),
    "https, own certificate": httpx.Client(timeout=5, trust_env=False, verify=own),
}
for port in cfg["ports"]:
    for how, client in clients.items():
        scheme = "http" if how == "http" else "https"
        for method, path, body in requests:
            what = f"{method} {scheme}://127.0.0.1:{port}{path} ({how})"
            kwargs = {"files": body} if isinstance(body, dict) else {"content": body}
            report["tried"] += 1
            try:
                resp = client.request(method, f"{scheme}://127.0.0.1:{port}{path}", **kwargs)
            except httpx.HTTPError:
                report["refused"] += 1
                continue
            if resp.status_code < 400 or any(m in resp.content for m in marks):
                accepted(what, f"HTTP {resp.status_code} {resp.content[:120]!r}")
                # The master hands out a volume write JWT with each assignment: try it.
                if path == "/dir/assign" and resp.status_code == 200:
                    try:
                        body = resp.json()
                        wrote = client.post(
                            f"{scheme}://{body['url']}/{body['fid']}",
                            files={"file": ("x.txt", b"written by another user")},
                            headers={"Authorization": resp.headers.get("Authorization", "")},
                        )
                        accepted(what + " then a volume write", f"HTTP {wrote.status_code}")
                    except Exception as exc:  # noqa: BLE001
                        accepted(what + " then a volume write", repr(exc))
            else:
                report["refused"] += 1

# ---------------------------------------------------------------- gRPC
bucket, key = known[0]
calls = [
    ("/grpc.health.v1.Health/Check", b"", False),
    ("/filer_pb.SeaweedFiler/LookupDirectoryEntry", msg((1, f"/buckets/{bucket}"), (2, key)), False),
    ("/filer_pb.SeaweedFiler/ListEntries", msg((1, f"/buckets/{bucket}")), True),
    (
        "/filer_pb.SeaweedFiler/CreateEntry",
        msg((1, "/buckets/data"), (2, msg((1, write_key), (9, b"written by another user")))),
        False,
    ),
    ("/filer_pb.SeaweedFiler/AssignVolume", msg((1, 1)), False),
    ("/master_pb.Seaweed/Assign", msg((1, 1)), False),
    ("/volume_server_pb.VolumeServer/ReadAllNeedles", msg(*[(1, v) for v in range(1, 16)]), True),
    ("/volume_server_pb.VolumeServer/VolumeServerStatus", b"", False),
]
credentials = {
    "insecure": None,
    "TLS, no client certificate": grpc.ssl_channel_credentials(ca),
    "TLS, own certificate": grpc.ssl_channel_credentials(
        ca, cfg["foreign_key"].encode(), cfg["foreign_cert"].encode()
    ),
}
for port in cfg["ports"]:
    for how, creds in credentials.items():
        target = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(target) if creds is None else grpc.secure_channel(target, creds)
        for method, request, stream in calls:
            what = f"gRPC {method} on {port} ({how})"
            report["tried"] += 1
            try:
                if stream:
                    answer = b"".join(channel.unary_stream(method)(request, timeout=5))
                else:
                    answer = channel.unary_unary(method)(request, timeout=5)
            except grpc.RpcError as exc:
                if exc.code().name in cfg["refused_grpc"]:
                    report["refused"] += 1
                else:
                    accepted(what, f"{exc.code().name} {exc.details()}")
                continue
            accepted(what, f"OK {answer[:120]!r}")
        channel.close()

# ---------------------------------------------------------------- Unix sockets
for path in cfg["unix_sockets"]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        report["tried"] += 1
        try:
            sock.connect(path)
        except OSError:
            report["refused"] += 1
            continue
        report["sockets_connected"].append(path)

# ---------------------------------------------------------------- files
# Through a descriptor of the sandbox folder: what its own modes allow, whatever the folders above it.
root = int(cfg["root_fd"])
for rel, is_dir in cfg["files"]:
    flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_DIRECTORY if is_dir else 0)
    try:
        fd = os.open(rel, flags, dir_fd=root)
    except OSError:
        continue
    try:
        if is_dir:
            os.listdir(fd)
        else:
            os.read(fd, 1)
        report["files_readable"].append(rel)
    except OSError:
        pass
    finally:
        os.close(fd)

print(json.dumps(report))
"""


# --------------------------------------------------------------------------- helpers


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates a local system user to probe the object store as someone else")


def _probe_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PROBE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.skip("useradd is not installed: cannot create a user to probe as")
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PROBE_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(PROBE_USER)


def _probe_env() -> dict[str, str]:
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONNOUSERSITE": "1",
        "HOME": "/",
        "LANG": "C.UTF-8",
        "GRPC_VERBOSITY": "NONE",  # each refused handshake would be logged otherwise
    }


def _as_user(user: pwd.struct_passwd, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env=_probe_env(),
        cwd="/",
        capture_output=True,
        text=True,
        **kwargs,
    )


def _interpreter(user: pwd.struct_passwd) -> str:
    """A Python the probe user may run, of this one's version, so this venv's grpc and httpx load in it."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        sys.executable,
        os.path.realpath(sys.executable),
        getattr(sys, "_base_executable", ""),
        shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin") or "",
        shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "",
    ]
    check = f"import sys, grpc, httpx; assert sys.version_info[:2] == ({version.replace('.', ', ')})"
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            if _as_user(user, [candidate, "-c", check], timeout=60).returncode == 0:
                return candidate
        except OSError:
            continue
    pytest.skip(f"no Python {version} that {PROBE_USER} may run with this environment's packages (grpcio, httpx)")


def _foreign_certificate() -> tuple[str, str]:
    """A self-signed client certificate, as anyone may make one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seaweedfs")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(pem).decode(), key_pem.decode()


def _weed(stack) -> list[psutil.Process]:
    leader = psutil.Process(stack.pids()["s3"])
    return [leader, *leader.children(recursive=True)]


def _connections(proc: psutil.Process, kind: str) -> list:
    # psutil 6 renamed Process.connections to net_connections.
    return (getattr(proc, "net_connections", None) or proc.connections)(kind=kind)


def _weed_tcp_ports(procs) -> set[int]:
    ports = set()
    for proc in procs:
        for conn in _connections(proc, "inet"):
            if conn.status == psutil.CONN_LISTEN:
                ports.add(conn.laddr.port)
    return ports


def _weed_unix_sockets(procs) -> list[str]:
    paths = set()
    for proc in procs:
        for conn in _connections(proc, "unix"):
            path = conn.laddr
            if not isinstance(path, str) or not path or path[0] in "@\0":
                continue  # unbound, or abstract
            if not path.startswith("/"):  # s3.sock, filer.sock: bound by a path relative to weed's folder
                path = os.path.join(proc.cwd(), path)
            if os.path.exists(path):
                paths.add(path)
    return sorted(paths)


def _tree(root: Path) -> list[tuple[str, bool]]:
    """Every file and folder under ``root`` (links not followed), relative to it."""
    found: list[tuple[str, bool]] = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in dirs:
            if not (base / name).is_symlink():
                found.append((str((base / name).relative_to(root)), True))
        for name in files:
            path = base / name
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            found.append((str(path.relative_to(root)), False))
    return found


def _s3(stack) -> Minio:
    endpoints = stack.endpoints()
    return Minio(
        endpoints.s3_endpoint_url.removeprefix("http://"),
        access_key=endpoints.s3_access_key,
        secret_key=endpoints.s3_secret_key,
        secure=False,
    )


def _owner_tls(stack) -> tuple[Path, Path, Path]:
    folder = stack.dir / "services" / "s3" / "tls"
    return folder / "ca.crt", folder / "seaweedfs.crt", folder / "seaweedfs.key"


def _owner_http(stack) -> httpx.Client:
    ca, cert, key = _owner_tls(stack)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return httpx.Client(timeout=10, trust_env=False, verify=context)


def _owner_channel(stack, port: int) -> grpc.Channel:
    ca, cert, key = _owner_tls(stack)
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def _pb_string(number: int, value: str) -> bytes:
    """One length-delimited protobuf field."""
    data, length = value.encode(), b""
    size = len(data)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([number << 3 | 2]) + length + data


def _known_needle(stack, content: bytes) -> str:
    """Write ``content`` straight to the volume server as the owner (a JWT from the master); its fid."""
    ports = json.loads((stack.dir / "ports.json").read_text())
    with _owner_http(stack) as owner:
        assigned = owner.get(f"https://127.0.0.1:{ports['s3.master']}/dir/assign")
        assert assigned.status_code == 200, assigned.text
        fid, url = assigned.json()["fid"], assigned.json()["url"]
        jwt = assigned.headers["Authorization"]
        # Without the master's JWT the volume server refuses, certificate or not.
        bare = owner.post(f"https://{url}/{fid}", files={"file": ("k.txt", content)})
        assert bare.status_code == 401, bare.text
        wrote = owner.post(f"https://{url}/{fid}", files={"file": ("k.txt", content)}, headers={"Authorization": jwt})
        assert wrote.status_code == 201, wrote.text
        assert owner.get(f"https://{url}/{fid}").status_code == 401  # reads need a JWT too
        lookup = owner.get(f"https://127.0.0.1:{ports['s3.master']}/dir/lookup", params={"fileId": fid, "read": "yes"})
        read = owner.get(f"https://{url}/{fid}", headers={"Authorization": lookup.headers["Authorization"]})
        assert read.content == content
    return fid


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def probe_user():
    _require_root()
    return _probe_user()


@pytest.fixture
def known_objects(mlflow_env):
    """An MLflow artifact and an object in the data bucket, each with a content no one could guess."""
    import mlflow

    mark = f"sandbox-secret-{uuid.uuid4().hex}"
    # An experiment of this stack's: MLflow's fluent API remembers the last one set in this process,
    # which may be another (already removed) stack's from a test before.
    mlflow.set_experiment("access-probe")
    with mlflow.start_run() as run:
        mlflow.log_text(mark, "notes/secret.txt")
    s3 = _s3(mlflow_env)
    artifact = [
        o.object_name
        for o in s3.list_objects("mlflow-artifacts", recursive=True)
        if run.info.run_id in o.object_name and o.object_name.endswith("notes/secret.txt")
    ]
    assert len(artifact) == 1, artifact
    key = f"access-probe/{uuid.uuid4().hex}.txt"
    s3.put_object("data", key, io.BytesIO(mark.encode()), len(mark))
    return mark, [("data", key), ("mlflow-artifacts", artifact[0])]


# --------------------------------------------------------------------------- tests


def test_no_other_user_gets_into_the_object_store_but_through_s3(stack, known_objects, probe_user, ledger):
    mark, objects = known_objects
    ports_json = json.loads((stack.dir / "ports.json").read_text())
    s3_port = ports_json["s3"]
    procs = _weed(stack)
    listening = _weed_tcp_ports(procs)
    assert s3_port in listening
    # Every port weed listens on, and every SeaweedFS port the sandbox chose, whatever it is called.
    ports = sorted((listening | {p for k, p in ports_json.items() if k.startswith("s3.")}) - {s3_port})
    assert len(ports) >= 8, ports  # master, volume, filer, S3's gRPC and admin, each with HTTP and/or gRPC
    sockets = _weed_unix_sockets(procs)

    fid = _known_needle(stack, mark.encode())
    write_key = f"access-probe/written-by-{PROBE_USER}-{uuid.uuid4().hex}.txt"
    foreign_cert, foreign_key = _foreign_certificate()
    ca, _, _ = _owner_tls(stack)

    # Controls: with the owner's certificate the same gRPC ports answer, and the filer finds the object.
    for key in (k for k in ports_json if k.startswith("s3.") and k.endswith(".grpc")):
        with _owner_channel(stack, ports_json[key]) as channel:
            with pytest.raises(grpc.RpcError) as answer:
                channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
            assert answer.value.code() == grpc.StatusCode.UNIMPLEMENTED, (key, answer.value)
    bucket, key = objects[0]
    request = _pb_string(1, f"/buckets/{bucket}") + _pb_string(2, key)  # LookupDirectoryEntryRequest
    with _owner_channel(stack, ports_json["s3.filer.grpc"]) as channel:
        found = channel.unary_unary("/filer_pb.SeaweedFiler/LookupDirectoryEntry")(request, timeout=10)
    assert key.rsplit("/", 1)[-1].encode() in found

    root_fd = os.open(stack.dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        config = {
            "ports": ports,
            "objects": objects,
            "marks": [mark],
            "fid": fid,
            "write_key": write_key,
            "ca": ca.read_text(),  # public: so a refusal is about the client's certificate, not the server's
            "foreign_cert": foreign_cert,
            "foreign_key": foreign_key,
            "refused_grpc": sorted(REFUSED_GRPC),
            "unix_sockets": sockets,
            "root_fd": root_fd,
            "files": _tree(stack.dir),
        }
        python = _interpreter(probe_user)
        result = _as_user(probe_user, [python, "-c", PROBE], input=json.dumps(config), pass_fds=(root_fd,), timeout=600)
    finally:
        os.close(root_fd)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["uid"] == probe_user.pw_uid
    ledger.add(
        "another local user: every SeaweedFS port, socket and file",
        faults=report["tried"] + len(config["files"]),
        other_user_access=len(report["accepted"]) + len(report["sockets_connected"]) + len(report["files_readable"]),
        recovered="refused",
    )
    assert report["accepted"] == [], "\n".join(report["accepted"])
    assert report["sockets_connected"] == [], report["sockets_connected"]
    assert report["files_readable"] == [], report["files_readable"]
    assert report["refused"] == report["tried"] >= len(ports) * 6 * 8, report  # every probe ran and was refused
    assert len(config["files"]) > 10 and any(rel.startswith("services/s3/") for rel, _ in config["files"])

    # Nothing was written, and the owner still reads both objects through S3 with the keys.
    s3 = _s3(stack)
    assert write_key not in [o.object_name for o in s3.list_objects("data", prefix="access-probe/", recursive=True)]
    for bucket, key in objects:
        assert s3.get_object(bucket, key).read() == mark.encode()


def test_the_owners_certificate_alone_does_not_open_filer_data(stack, known_objects):
    """Behind the mutual TLS, the filer still wants a JWT for reads and writes."""
    _, objects = known_objects
    ports = json.loads((stack.dir / "ports.json").read_text())
    bucket, key = objects[0]
    with _owner_http(stack) as owner:
        base = f"https://127.0.0.1:{ports['s3.filer']}"
        assert owner.get(f"{base}/buckets/{bucket}/{key}").status_code == 401
        assert owner.put(f"{base}/buckets/data/access-probe/jwt-less.txt", content=b"x").status_code == 401
        assert owner.get(f"{base}/buckets/{bucket}/").status_code == 401


def test_security_files_are_private_and_no_metrics_port_is_open(stack):
    service = stack.dir / "services" / "s3"
    for path in (service / "security.toml", *_owner_tls(stack)):
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), path
    assert oct((service / "tls").stat().st_mode & 0o777) == oct(0o700)
    text = (service / "security.toml").read_text()
    ca_pem = _owner_tls(stack)[0].read_text()
    assert "PRIVATE KEY" not in text and "PRIVATE KEY" not in ca_pem  # the CA's key is not kept
    # Every port weed opens is one the sandbox chose and knows of: none (metrics) is left over.
    ports = json.loads((stack.dir / "ports.json").read_text())
    known = {port for key, port in ports.items() if key == "s3" or key.startswith("s3.")} - {ports.get("s3.metrics")}
    assert _weed_tcp_ports(_weed(stack)) <= known


# --------------------------------------------------------------------------- MLflow, JupyterLab, PostgreSQL, models

# As the probe user: every port the sandbox chose but SeaweedFS's internal ones (the test above; S3's own is asked
# here), over HTTP without credentials or with a guessed password or token, over gRPC without the token, and
# PostgreSQL without a password. A request is refused when it fails, or gets a 3xx or 4xx without the secret; the
# health checks (`HEALTH`) are all one may read.
FRONT_DOOR_PROBE = r"""
import base64, json, sys
import grpc, httpx, psycopg

cfg = json.load(sys.stdin)
mark = cfg["mark"].encode()
report = {"tried": 0, "refused": 0, "accepted": []}
run, artifact, model = cfg["run_id"], cfg["artifact"], cfg["model"]
requests = [
    ("GET", "/", None),
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=100", None),
    ("GET", "/api/2.0/mlflow/registered-models/search", None),
    ("GET", f"/api/2.0/mlflow/runs/get?run_id={run}", None),
    ("GET", f"/get-artifact?path=notes/secret.txt&run_uuid={run}", None),
    ("GET", f"/api/2.0/mlflow-artifacts/artifacts/{artifact}", None),
    ("GET", f"/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact}", None),
    ("POST", "/api/2.0/mlflow/experiments/create", {"name": "made-by-another-user"}),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/written-by-another-user.txt", "x"),
    ("POST", "/api/2.0/mlflow/users/create", {"username": "intruder", "password": "intruder-password-1"}),
    ("GET", "/api/contents", None),
    ("GET", "/api/kernels", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("GET", "/v2/models", None),
    ("GET", f"/v2/models/{model}", None),
    ("GET", f"/v1/models/{model}", None),
    ("POST", f"/v1/models/{model}:predict", {"instances": [[0.1] * 8]}),
    ("POST", f"/v2/models/{model}/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0.1]}]}),
]
guesses = {
    "no credentials": {},
    "a guessed password": {"Authorization": "Basic " + base64.b64encode(b"sandbox-admin:sandbox-admin").decode()},
    "a guessed token": {"Authorization": "Bearer " + "0" * 40},
}
with httpx.Client(timeout=10, trust_env=False) as client:
    for port in cfg["http_ports"]:
        for how, headers in guesses.items():
            for method, path, body in requests:
                report["tried"] += 1
                url = f"http://127.0.0.1:{port}{path}"
                kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
                try:
                    resp = client.request(method, url, headers=headers, **kwargs)
                except httpx.HTTPError:
                    report["refused"] += 1
                    continue
                # A redirect (JupyterLab's to its login page) without the secret is a refusal too.
                if (resp.status_code < 300 and path not in cfg["health"]) or mark in resp.content:
                    report["accepted"].append(f"{method} {url} ({how}): HTTP {resp.status_code} {resp.content[:120]!r}")
                else:
                    report["refused"] += 1

def field(number, value):
    value = value.encode()
    return bytes([number << 3 | 2, len(value)]) + value

calls = [
    ("/inference.GRPCInferenceService/ServerMetadata", b""),
    ("/inference.GRPCInferenceService/ModelMetadata", field(1, model)),
    ("/inference.GRPCInferenceService/ModelReady", field(1, model)),
    ("/inference.GRPCInferenceService/ModelInfer", field(1, model)),
]
for port in cfg["grpc_ports"]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for how, metadata in {"no token": None, "a guessed token": (("authorization", "Bearer " + "0" * 40),)}.items():
            for method, request in calls:
                report["tried"] += 1
                try:
                    answer = channel.unary_unary(method)(request, timeout=10, metadata=metadata)
                except grpc.RpcError as exc:
                    if exc.code().name == "UNAUTHENTICATED":
                        report["refused"] += 1
                    else:
                        report["accepted"].append(f"gRPC {method} on {port} ({how}): {exc.code().name} {exc.details()}")
                    continue
                report["accepted"].append(f"gRPC {method} on {port} ({how}): OK {answer[:120]!r}")

for user in ("mlflow", "sandbox_admin", "postgres"):
    report["tried"] += 1
    try:
        db = {"host": "127.0.0.1", "port": cfg["postgres_port"], "dbname": "mlflow", "connect_timeout": 10}
        psycopg.connect(user=user, **db).close()
    except psycopg.Error:
        report["refused"] += 1
        continue
    report["accepted"].append(f"PostgreSQL as {user} without a password")

print(json.dumps(report))
"""

HEALTH = ["/", "/health", "/v2/health/live", "/v2/health/ready"]


def _deployment_ports(endpoints) -> tuple[list[int], list[int]]:
    """The REST and gRPC ports of every running deployment (ports.json also keeps those of undeployed ones)."""
    rest = sorted({int(endpoint.url.rsplit(":", 1)[1]) for endpoint in endpoints.inference.values()})
    grpc_ports = sorted({int(e.grpc.rsplit(":", 1)[1]) for e in endpoints.inference.values() if e.grpc})
    return rest, grpc_ports


def test_no_other_user_gets_into_mlflow_jupyterlab_postgres_or_a_model_server(stack, known_objects, probe_user, ledger):
    mark, objects = known_objects
    stack.cli("serve", "deploy", "probed", "--model", "models:/fraud-detector/1")
    stack.cli(
        "serve",
        "split",
        "probed-ab",
        "--variant",
        "a=models:/fraud-detector/1:50",
        "--variant",
        "b=models:/fraud-detector/1:50",
    )
    try:
        endpoints = stack.endpoints()
        ports = json.loads((stack.dir / "ports.json").read_text())
        rest, grpc_ports = _deployment_ports(endpoints)
        assert len(rest) >= 4 and len(grpc_ports) >= 1, ports  # probed, the split's router and its two variants
        # S3's own port too: without the keys (or with guessed ones) S3 answers 403.
        http_ports = [ports["mlflow"], ports["notebooks"], ports["postgres"], ports["s3"], *rest]
        artifact = next(key for bucket, key in objects if bucket == "mlflow-artifacts")  # EXPERIMENT/RUN/artifacts/...
        run_id = artifact.split("/")[1]

        # Controls: the owner's clients, with the sandbox's credentials, get in through the same doors.
        with httpx.Client(timeout=10, trust_env=False) as owner:
            login = (endpoints.mlflow_username, endpoints.mlflow_password)
            got = owner.get(
                f"{endpoints.mlflow_tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{artifact}", auth=login
            )
            assert got.status_code == 200 and got.content == mark.encode(), got.text
            for name in ("probed", "probed-ab"):
                url = endpoints.inference[name].v1_predict
                answer = owner.post(url, json={"instances": [[0.1] * 8]}, headers=endpoints.serving_headers())
                assert answer.status_code == 200, answer.text
                assert owner.post(url, json={"instances": [[0.1] * 8]}).status_code == 401
                # A page of another site (DNS rebinding) reaches 127.0.0.1 with its own Host: refused, token or not.
                foreign = {**endpoints.serving_headers(), "Host": "rebound.example"}
                assert owner.post(url, json={"instances": [[0.1] * 8]}, headers=foreign).status_code == 403
        config = {
            "mark": mark,
            "run_id": run_id,
            "artifact": artifact,
            "model": "probed",
            "http_ports": http_ports,
            "grpc_ports": grpc_ports,
            "postgres_port": ports["postgres"],
            "health": HEALTH,
        }
        python = _interpreter(probe_user)
        result = _as_user(probe_user, [python, "-c", FRONT_DOOR_PROBE], input=json.dumps(config), timeout=600)
    finally:
        stack.cli("serve", "undeploy", "probed-ab", check=False)
        stack.cli("serve", "undeploy", "probed", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    ledger.add(
        "another local user: MLflow, JupyterLab, PostgreSQL, S3, model servers and a router",
        faults=report["tried"],
        other_user_access=len(report["accepted"]),
        recovered="refused",
    )
    assert report["accepted"] == [], "\n".join(report["accepted"])
    assert report["refused"] == report["tried"] >= len(http_ports) * 3 * 19, report
    # Nothing was made: no experiment, no user, no object.
    client = endpoints.mlflow_client()
    assert client.get_experiment_by_name("made-by-another-user") is None
    assert "written-by-another-user.txt" not in [o.object_name for o in _s3(stack).list_objects("mlflow-artifacts")]
