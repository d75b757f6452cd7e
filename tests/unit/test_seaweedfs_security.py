"""What the sandbox writes for SeaweedFS's own security: security.toml, a CA and a certificate, mini.options."""

from __future__ import annotations

import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from sandbox.config import SandboxConfig
from sandbox.profiles.local.services.base import ServiceContext
from sandbox.profiles.local.services.seaweedfs import (
    SECURITY_FILE,
    SOCKETS_RECORD,
    TLS_DIR,
    JwtKeys,
    SeaweedS3,
    TlsFiles,
    forget_saved_options,
    grpc_socket_paths,
    render_security_toml,
    write_security,
    write_tls_files,
)
from sandbox.profiles.local.state import PortMap, SandboxDir, Secrets

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

SERVERS = ("master", "volume", "filer", "s3", "admin")


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def tls(tmp_path) -> TlsFiles:
    return write_tls_files(tmp_path / "tls")


def _rendered(tls: TlsFiles, jwt: JwtKeys | None = None) -> dict:
    return tomllib.loads(render_security_toml(tls, jwt or JwtKeys.generate()))


# --------------------------------------------------------------------------- security.toml


def test_every_grpc_server_and_client_uses_the_sandbox_ca_and_certificate(tls):
    conf = _rendered(tls)
    assert conf["grpc"]["ca"] == str(tls.ca)
    for name in (*SERVERS, "worker", "client"):
        assert conf["grpc"][name] == {"cert": str(tls.cert), "key": str(tls.key)}, name


def test_every_http_port_but_s3s_asks_for_a_client_certificate(tls):
    conf = _rendered(tls)
    # A [https.<server>] with a ca is mutual TLS; S3's port keeps its own (signature) authentication.
    assert set(conf["https"]) == {"client", "master", "volume", "filer", "admin"}
    for name in ("master", "volume", "filer", "admin"):
        assert conf["https"][name] == {"cert": str(tls.cert), "key": str(tls.key), "ca": str(tls.ca)}, name
        assert "disable_tls_verify_client_cert" not in conf["https"][name]
    client = conf["https"]["client"]
    assert client["enabled"] is True and client["insecure_skip_verify"] is False
    assert (client["cert"], client["key"], client["ca"]) == (str(tls.cert), str(tls.key), str(tls.ca))


def test_volume_and_filer_reads_and_writes_need_jwts_with_distinct_keys(tls):
    jwt = JwtKeys.generate()
    conf = _rendered(tls, jwt)["jwt"]
    keys = {
        conf["signing"]["key"],
        conf["signing"]["read"]["key"],
        conf["filer_signing"]["key"],
        conf["filer_signing"]["read"]["key"],
    }
    assert keys == {jwt.volume_write, jwt.volume_read, jwt.filer_write, jwt.filer_read}
    assert len(keys) == 4 and all(len(key) >= 64 for key in keys)
    for table in (conf["signing"], conf["signing"]["read"], conf["filer_signing"], conf["filer_signing"]["read"]):
        assert 0 < table["expires_after_seconds"] <= 60


def test_uis_and_directory_metadata_are_off_and_no_ip_white_list_is_relied_on(tls):
    conf = _rendered(tls)
    assert conf["access"]["ui"] is False
    assert conf["filer"]["expose_directory_metadata"]["enabled"] is False
    assert "guard" not in conf  # every local user is 127.0.0.1, and X-Forwarded-For is believed


def test_new_keys_each_time():
    assert JwtKeys.generate() != JwtKeys.generate()


@pytest.mark.parametrize("name", ['with "quotes"', "back\\slash", "new\nline", "tab\tand\x7fdel", "ünïcødé ✓"])
def test_any_path_is_written_as_a_valid_toml_string(tmp_path, name):
    folder = tmp_path / name
    files = TlsFiles(ca=folder / "ca.crt", cert=folder / "c.crt", key=folder / "c.key")
    conf = _rendered(files)
    assert conf["grpc"]["ca"] == str(files.ca)
    assert conf["https"]["filer"]["key"] == str(files.key)


# --------------------------------------------------------------------------- certificates


def test_tls_files_are_private_and_the_ca_key_is_not_kept(tls):
    folder = tls.ca.parent
    assert _mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (tls.ca, tls.cert, tls.key))
    for path in (tls.ca, tls.cert, tls.key):
        assert _mode(path) == 0o600, path
    assert "PRIVATE KEY" not in tls.ca.read_text() + tls.cert.read_text()


def test_the_certificate_is_signed_by_the_ca_for_loopback_servers_and_clients(tls):
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_each_write_makes_a_new_ca(tmp_path):
    first = write_tls_files(tmp_path / "tls").ca.read_bytes()
    assert write_tls_files(tmp_path / "tls").ca.read_bytes() != first


def _handshake(tls: TlsFiles, client_cert: TlsFiles | None) -> None:
    """A TLS handshake on a socket pair: the server wants a client certificate from the sandbox's CA."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls.cert, tls.key)
    server_ctx.load_verify_locations(tls.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(tls.ca))
    if client_cert is not None:
        client_ctx.load_cert_chain(client_cert.cert, client_cert.key)
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True) as conn:
                conn.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname="127.0.0.1") as conn:
            conn.sendall(b"x")
            conn.recv(1)  # TLS 1.3: the server's verdict on the client certificate arrives after the handshake
    finally:
        thread.join(10)
    if errors:
        raise errors[0]


def test_the_certificate_passes_mutual_tls_and_a_stranger_does_not(tmp_path, tls):
    _handshake(tls, tls)
    stranger = write_tls_files(tmp_path / "stranger")  # same shape, another CA
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(tls, stranger)
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(tls, None)


# --------------------------------------------------------------------------- the service


@pytest.fixture
def service(tmp_path) -> SeaweedS3:
    sandbox = SandboxDir(tmp_path / "sbx")
    sandbox.create()
    ctx = ServiceContext(SandboxConfig(dir=sandbox.root), sandbox, Secrets.generate(), PortMap(sandbox))
    svc = SeaweedS3(ctx)
    svc.claim_ports()
    return svc


def test_start_writes_security_toml_where_weed_runs(service, monkeypatch):
    monkeypatch.setenv("WEED_JWT_SIGNING_KEY", "from-the-users-shell")
    monkeypatch.setenv("WEED_HTTPS_FILER_CA", "")
    argv, env = service.command()
    path = service.dir / SECURITY_FILE  # LocalService.start runs weed in service.dir; weed reads ./security.toml
    assert _mode(path) == 0o600
    conf = tomllib.loads(path.read_text())
    assert conf["grpc"]["ca"] == str(service.dir / TLS_DIR / "ca.crt")
    assert service.tls_files.key.exists() and _mode(service.tls_files.key) == 0o600
    # No secret on the command line or in the environment; inherited WEED_* settings cannot override the file.
    secrets_in_file = [conf["jwt"]["signing"]["key"], conf["jwt"]["filer_signing"]["read"]["key"]]
    for secret in secrets_in_file:
        assert not any(secret in arg for arg in argv)
        assert secret not in env.values()
    assert env["WEED_JWT_SIGNING_KEY"] == "" and env["WEED_HTTPS_FILER_CA"] == ""
    assert env["AWS_ACCESS_KEY_ID"] == service.ctx.secrets.s3_access_key


def test_no_metrics_or_debug_port_is_opened(service):
    argv, _ = service.command()
    assert "-metricsPort=0" in argv
    assert not [arg for arg in argv if arg.startswith(("-debug", "-webdav.port", "-filer.port.public"))]
    assert "s3.metrics" not in service.port_keys()
    opened = {arg.split("=", 1)[1] for arg in argv if arg.split("=", 1)[0].endswith((".port", ".grpc", "Port"))}
    assert opened - {"0"} == {str(service.ctx.ports.get(key)) for key in service.port_keys()}


def test_each_start_gets_new_keys(service):
    service.command()
    first = (service.dir / SECURITY_FILE).read_text()
    service.command()
    assert (service.dir / SECURITY_FILE).read_text() != first


def test_write_security_replaces_a_loosened_file(tmp_path):
    path = write_security(tmp_path)
    path.chmod(0o644)
    assert _mode(write_security(tmp_path)) == 0o600


# --------------------------------------------------------------------------- mini.options


def test_options_saved_by_an_earlier_start_do_not_come_back(tmp_path):
    saved = tmp_path / "mini.options"
    saved.write_text(
        "#!/bin/bash\n# Mini server configuration\n\nmetricsPort=19090\n-debug=true\nwhiteList=\n"
        "filer.port=8888\n\n# Auto-calculated volume size\nmaster.volumeSizeLimitMB=1024\n"
    )
    forget_saved_options(tmp_path)
    lines = [line for line in saved.read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ["master.volumeSizeLimitMB=1024"]
    assert _mode(saved) == 0o600


def test_no_saved_options_is_fine(tmp_path):
    forget_saved_options(tmp_path)
    assert not (tmp_path / "mini.options").exists()


# --------------------------------------------------------------------------- sockets and memory


def test_weeds_own_sockets_are_in_its_folder_by_a_short_relative_path(service):
    argv, _ = service.command()
    flags = dict(arg.split("=", 1) for arg in argv if arg.startswith("-") and "=" in arg)
    # Relative to weed's working directory (the service's folder): no sandbox path can push them past 108 bytes.
    assert flags["-s3.localSocket"] == "s3.sock" and flags["-filer.localSocket"] == "filer.sock"
    # The gRPC ones have no flag; their /tmp paths are recorded for the stop that removes them.
    recorded = (service.dir / SOCKETS_RECORD).read_text().split()
    assert recorded == sorted(str(path) for path in grpc_socket_paths(service.ctx.ports.as_dict()))
    assert len(recorded) == 5 and all(path.startswith("/tmp/seaweedfs-") for path in recorded)
    assert _mode(service.dir / SOCKETS_RECORD) == 0o600


def test_weed_collects_sooner_but_has_no_memory_limit_to_spin_on(service):
    _, env = service.command()
    assert int(env["GOGC"]) < 100 and "GOMEMLIMIT" not in env
