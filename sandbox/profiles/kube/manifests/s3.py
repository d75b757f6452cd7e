"""The S3 store (SeaweedFS, or MinIO) on its own volume, and the Job that makes the stack's buckets in it."""

from __future__ import annotations

from typing import Any

from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.spec import (
    BUCKETS_JOB,
    PORTS,
    REGION,
    S3,
    SECRET_S3,
    StackSpec,
    deployment,
    http_probe,
    meta,
    pod_spec,
    pvc,
    resources,
    script,
    secret_ref,
    security_context,
    service,
    template,
)

TITLE = "S3 store and buckets"


def seaweedfs_identities(access_key: str, secret_key: str, name: str = "sandbox") -> dict[str, Any]:
    """SeaweedFS's `-s3.config` file: one identity, these keys; anonymous requests are refused."""
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return {
        "identities": [
            {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}], "actions": actions}
        ]
    }


def _seaweedfs(port: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    container: dict[str, Any] = {
        "name": "seaweedfs",
        "image": versions.IMAGES["seaweedfs"],
        "args": [
            "server",
            "-dir=/data",
            "-filer",
            "-s3",
            f"-s3.port={port}",
            # Only the S3 port is for clients: no Iceberg or Lance catalog listeners (weed 4.48's
            # `server -h`: "0 to disable").
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.config=/etc/seaweedfs/s3.json",
            "-master.volumePreallocate=false",
            "-master.volumeSizeLimitMB=1024",
            "-master.telemetry=false",
            "-volume.max=0",
        ],
        "ports": [{"name": "s3", "containerPort": port, "protocol": "TCP"}],
        # /status is SeaweedFS's unauthenticated health page on the S3 port (KFP's manifests probe it).
        "readinessProbe": http_probe("/status", port, failures=24),
        "resources": resources("50m", "128Mi", "1", "1Gi"),
        "securityContext": security_context(1001),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "s3-config", "mountPath": "/etc/seaweedfs", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "s3-data"}},
        {
            "name": "s3-config",
            "secret": {"secretName": SECRET_S3, "items": [{"key": "s3.json", "path": "s3.json"}]},
        },
    ]
    return container, volumes, 1001


def _minio(port: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    container = {
        "name": "minio",
        "image": versions.IMAGES["minio"],
        "args": ["server", "/data", "--address", f":{port}", "--console-address", "127.0.0.1:9001"],
        "env": [
            secret_ref("MINIO_ROOT_USER", SECRET_S3, "access-key"),
            secret_ref("MINIO_ROOT_PASSWORD", SECRET_S3, "secret-key"),
            {"name": "MINIO_BROWSER", "value": "off"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": "s3", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": http_probe("/minio/health/ready", port),
        "resources": resources("50m", "256Mi", "1", "1Gi"),
        "securityContext": security_context(1000),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return container, [{"name": "data", "persistentVolumeClaim": {"claimName": "s3-data"}}], 1000


def _buckets_job(spec: StackSpec) -> dict[str, Any]:
    # The project's image carries boto3; the Job needs nothing else (its program: scripts/create_buckets.py).
    container = {
        "name": "create-buckets",
        "image": spec.image,
        "command": ["python", "-c", script("create_buckets.py")],
        "env": [
            {"name": "S3_ENDPOINT", "value": spec.url(S3)},
            {"name": "AWS_DEFAULT_REGION", "value": REGION},
            {"name": "BUCKETS", "value": ",".join(spec.buckets)},
            {"name": "HOME", "value": "/tmp"},
            secret_ref("AWS_ACCESS_KEY_ID", SECRET_S3, "access-key"),
            secret_ref("AWS_SECRET_ACCESS_KEY", SECRET_S3, "secret-key"),
        ],
        "resources": resources("10m", "64Mi", "500m", "256Mi"),
        "securityContext": security_context(1000),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(spec, BUCKETS_JOB, BUCKETS_JOB),
        "spec": {
            "backoffLimit": 6,
            "template": template(spec, BUCKETS_JOB, pod_spec([container], restartPolicy="OnFailure")),
        },
    }


def objects(spec: StackSpec) -> list[dict[str, Any]]:
    port = PORTS[S3] if spec.object_store == "seaweedfs" else 9000
    container, volumes, fs_group = (_seaweedfs if spec.object_store == "seaweedfs" else _minio)(port)
    store = deployment(spec, S3, pod_spec([container], fs_group=fs_group, volumes=volumes), recreate=True)
    return [pvc(spec, S3, "s3-data", "5Gi"), store, service(spec, S3, PORTS[S3], port), _buckets_job(spec)]
