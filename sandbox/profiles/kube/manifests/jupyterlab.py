"""JupyterLab (`notebooks.enabled`): the project's image, its kernels pointed at the in-cluster stack."""

from __future__ import annotations

from typing import Any

from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.spec import (
    LOOPBACK,
    NOTEBOOKS,
    PORTS,
    SECRET_NOTEBOOKS,
    SECRET_POSTGRES,
    StackSpec,
    deployment,
    http_probe,
    pod_spec,
    pvc,
    resources,
    secret_ref,
    security_context,
    service,
    serving_token_env,
    stack_client_env,
)

TITLE = "JupyterLab"


def objects(spec: StackSpec) -> list[dict[str, Any]]:
    """The workspace volume, the server and its Service; none when notebooks are off."""
    if not spec.notebooks:
        return []
    port = PORTS[NOTEBOOKS]
    argv = [
        "python",
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=0.0.0.0",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.root_dir=/workspace",
        # Host must be a loopback name (127.0.0.1:PORT through kind's mapping or a port-forward): DNS rebinding.
        "--ServerApp.allow_remote_access=False",
        "--ServerApp.allow_origin=",
        "--ServerApp.disable_check_xsrf=False",
        "--ServerApp.allow_unauthenticated_access=False",
        "--ServerApp.terminals_enabled=False",
        "--ServerApp.jpserver_extensions=jupyter_server_terminals=False",
        "--ServerApp.jpserver_extensions=jupyter_lsp=False",
        "--PasswordIdentityProvider.hashed_password=",
        "--PasswordIdentityProvider.allow_password_change=False",
        "--KernelManager.ip=127.0.0.1",  # each kernel's ZMQ ports on the pod's loopback
        "--KernelManager.transport=tcp",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=",
    ]
    env = [
        secret_ref("JUPYTER_TOKEN", SECRET_NOTEBOOKS, "token"),  # the environment, not argv
        {"name": "HOME", "value": "/workspace"},
        {"name": "JUPYTER_CONFIG_DIR", "value": "/tmp/jupyter/config"},
        {"name": "JUPYTER_DATA_DIR", "value": "/tmp/jupyter/data"},
        {"name": "JUPYTER_RUNTIME_DIR", "value": "/tmp/jupyter/runtime"},
        {"name": "IPYTHONDIR", "value": "/tmp/ipython"},
        # The kernels' environment: what `sandbox env` exports, pointing at the in-cluster services.
        *stack_client_env(spec),
        secret_ref("ML_SANDBOX_POSTGRES_URL", SECRET_POSTGRES, "url"),
        secret_ref("ML_SANDBOX_MONITORING_DB_URL", SECRET_POSTGRES, "monitoring-url"),
        {"name": "ML_SANDBOX_BUCKETS", "value": ",".join(spec.buckets)},
        {"name": "ML_SANDBOX_COMPONENT", "value": "notebooks.kernel"},
        *serving_token_env(spec),  # the starter notebooks call the model servers with it
    ]
    container = {
        "name": "jupyterlab",
        "image": versions.IMAGES.get("jupyterlab") or spec.image,
        "command": argv,
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # GET /api answers without the token; the Host header is a loopback name, as the server demands.
        "readinessProbe": http_probe("/api", port, failures=24, headers={"Host": f"{LOOPBACK}:{port}"}),
        "resources": resources("100m", "512Mi", "2", "2Gi"),
        "securityContext": security_context(1000),
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = pod_spec(
        [container],
        fs_group=1000,
        volumes=[
            {"name": "workspace", "persistentVolumeClaim": {"claimName": "notebooks-workspace"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    )
    return [
        pvc(spec, NOTEBOOKS, "notebooks-workspace", "1Gi"),
        deployment(spec, NOTEBOOKS, pod, recreate=True),
        service(spec, NOTEBOOKS, port, port),
    ]
