"""The project's image (`Dockerfile`) run under Docker against a real local stack.

`make test-image` builds the image and runs this; `make test` does not (it needs a Docker engine). Without
a reachable Docker daemon every test here is skipped; with one, a missing image is a failure naming the fix.

The stack is the local profile on 127.0.0.1 (its own sandbox dir, purged at the end). The containers share
the host's network (`--network host`) and bind 127.0.0.1 only, run as the image's user with every
capability dropped, and get the stack's settings (`sandbox env`) from a private env file, never the
command line. Two model servers serve two versions of the reference model; the router splits 50/50 in
front of them. Every answer is compared with the model's own `predict` in this process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import psutil
import pytest

from sandbox.endpoints import Endpoints, patched_environ
from sandbox.net import LOOPBACK, free_port
from sandbox.serving.reference_model import synthetic_data

pytestmark = pytest.mark.image

IMAGE = os.environ.get("ML_SANDBOX_IMAGE") or f"ml-sandbox:{version('ml-platform-sandbox')}"
MODEL = "image-smoke"
IMAGE_USER = "10001:10001"  # the Dockerfile's USER
READY_TIMEOUT_S = 300.0  # loading a model on a busy 2-core machine; a readiness wait, not an assertion


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def _docker_available() -> str | None:
    """None when a Docker daemon answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 30 s"
    return None if info.returncode == 0 else f"`docker info` failed: {info.stderr.strip()[-200:]}"


@pytest.fixture(scope="module")
def image() -> str:
    reason = _docker_available()
    if reason:
        pytest.skip(f"needs a Docker engine: {reason}")
    if _docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is not built: run `make image` (or set ML_SANDBOX_IMAGE)")
    return IMAGE


@dataclass(frozen=True)
class Stack:
    dir: Path
    endpoints: Endpoints


def _sandbox(*args: str, directory: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", *args, "--dir", str(directory)], capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sandbox {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def stack(image, tmp_path_factory) -> Stack:
    """A local stack of its own with two versions of the reference model registered."""
    from sandbox.serving.reference_model import register_reference_model

    directory = tmp_path_factory.mktemp("image") / "sandbox"
    _sandbox("up", "--no-notebooks", directory=directory)
    try:
        endpoints = Endpoints(**json.loads(_sandbox("status", "--json", directory=directory).stdout)["endpoints"])
        for seed in (0, 1):
            register_reference_model(endpoints.mlflow_tracking_uri, MODEL, n_estimators=20, seed=seed)
        yield Stack(directory, endpoints)
    finally:
        _sandbox("down", "--purge", directory=directory, check=False)


@dataclass(frozen=True)
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def logs(self) -> str:
        result = _docker("logs", "--tail", "40", self.name, check=False)
        return result.stdout + result.stderr


def _run(image: str, env_file: Path, label: str, *command: str, port: int) -> Container:
    name = f"ml-sandbox-image-test-{label}-{uuid.uuid4().hex[:8]}"
    _docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--env-file",
        str(env_file),
        image,
        *command,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    )
    return Container(name, port)


def _wait_ready(container: Container, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        state = _docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", container.name).stdout.split()
        if state[0] != "true":
            raise AssertionError(f"{container.name} exited with code {state[1]}:\n{container.logs()}")
        try:
            if httpx.get(container.url + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"{container.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{container.logs()}")


@dataclass(frozen=True)
class Deployment:
    servers: dict[str, Container]  # variant label -> model server (a serves version 1, b version 2)
    router: Container


@pytest.fixture(scope="module")
def deployment(image, stack, tmp_path_factory) -> Deployment:
    env_file = tmp_path_factory.mktemp("image-env") / "sandbox.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{key}={value}\n" for key, value in stack.endpoints.env().items()))
    started: list[Container] = []
    try:
        servers = {}
        for label, model_version in (("a", "1"), ("b", "2")):
            server = _run(
                image,
                env_file,
                label,
                *("python", "-m", "sandbox.serving.model_server", "--name", f"{MODEL}-{label}"),
                *("--model-uri", f"models:/{MODEL}/{model_version}", "--batch-size", "16", "--batch-wait-ms", "2"),
                port=free_port(),
            )
            started.append(server)
            servers[label] = server
        for server in servers.values():
            _wait_ready(server, "/v2/health/ready")  # a health path: answered without the serving token
        variants = [f"--variant={label}={server.url}/{MODEL}-{label}:50" for label, server in servers.items()]
        router = _run(
            image, env_file, "router", "python", "-m", "sandbox.serving.router", "--name", MODEL, *variants,
            port=free_port(),
        )  # fmt: skip
        started.append(router)
        _wait_ready(router, "/v2/health/ready")
        yield Deployment(servers, router)
    finally:
        for container in started:
            _docker("rm", "--force", container.name, check=False)


def _expected(stack: Stack, model_version: str, frame) -> list:
    """The model's own answer, loaded in this process from the stack's registry and S3."""
    import mlflow

    with patched_environ(stack.endpoints.env()):
        mlflow.set_tracking_uri(stack.endpoints.mlflow_tracking_uri)
        return mlflow.pyfunc.load_model(f"models:/{MODEL}/{model_version}").predict(frame).tolist()


def test_the_containers_run_as_the_images_non_root_user(deployment):
    for container in [*deployment.servers.values(), deployment.router]:
        assert _docker("inspect", "--format", "{{.Config.User}}", container.name).stdout.strip() == IMAGE_USER
        # The server is the container's first process: its real and effective user ids.
        status = _docker("exec", container.name, "cat", "/proc/1/status").stdout
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["10001"] * 4, uid_line
        assert _docker("exec", container.name, "id", "-u").stdout.strip() == "10001"


def test_the_image_has_what_the_pipeline_components_import(image):
    """KFP runs a component as `python3 -m kfp.dsl.executor_main` in the image: its imports must be there."""
    from sandbox.pipelines.config import COMPONENT_DISTRIBUTIONS

    modules = [{"scikit-learn": "sklearn"}.get(name, name) for name in COMPONENT_DISTRIBUTIONS]
    script = (
        "import importlib, shutil, sys; "
        f"[importlib.import_module(m) for m in {[*modules, 'kfp.dsl.executor_main', 'sandbox']!r}]; "
        "print(shutil.which('python3'), sys.prefix)"
    )
    result = _docker("run", "--rm", "--network", "none", image, "python3", "-c", script)
    assert result.stdout.split() == ["/opt/venv/bin/python3", "/opt/venv"], result.stdout + result.stderr


def test_the_servers_listen_on_loopback_only(deployment):
    ports = {c.port for c in [*deployment.servers.values(), deployment.router]}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    ours = [c for c in listening if c.laddr.port in ports]
    assert {c.laddr.port for c in ours} == ports
    assert all(ipaddress.ip_address(c.laddr.ip).is_loopback for c in ours), [c.laddr for c in ours]


def test_the_model_servers_answer_v1_and_v2_as_the_model_predicts(stack, deployment, capsys):
    frame, _ = synthetic_data(rows=12, seed=7)
    for label, model_version in (("a", "1"), ("b", "2")):
        server = deployment.servers[label]
        expected = _expected(stack, model_version, frame)
        name = f"{MODEL}-{label}"
        http = httpx.Client(headers=stack.endpoints.serving_headers())  # the token from the environment file
        refused = httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": frame.to_numpy().tolist()})
        assert refused.status_code == 401, refused.text
        v1 = http.post(f"{server.url}/v1/models/{name}:predict", json={"instances": frame.to_numpy().tolist()})
        assert v1.status_code == 200, v1.text
        assert v1.json()["predictions"] == expected
        tensor = {"name": "input-0", "shape": [12, 8], "datatype": "FP64", "data": frame.to_numpy().ravel().tolist()}
        v2 = http.post(f"{server.url}/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == expected
        assert v2.json()["model_name"] == name
        bad = http.post(f"{server.url}/v1/models/{name}:predict", json={"instances": [[0.0] * 7]})
        assert bad.status_code == 400, bad.text
        with capsys.disabled():
            print(f"\n  {name} (models:/{MODEL}/{model_version}) V1 {v1.json()}")
            print(f"  {name} V2 outputs {v2.json()['outputs']}")
            print(f"  {name} V1 with 7 features: {bad.status_code} {bad.json()}")


def test_the_router_splits_between_the_two_servers(stack, deployment, capsys):
    frame, _ = synthetic_data(rows=4, seed=11)
    expected = {"a": _expected(stack, "1", frame), "b": _expected(stack, "2", frame)}
    seen: Counter = Counter()
    tensor = {"name": "input-0", "shape": [4, 8], "datatype": "FP64", "data": frame.to_numpy().ravel().tolist()}
    auth = stack.endpoints.serving_headers()
    with httpx.Client(base_url=deployment.router.url, timeout=30, headers=auth) as client:
        for i in range(40):
            if i % 2:
                response = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
                answer = response.json()["outputs"][0]["data"] if response.status_code == 200 else None
            else:
                response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": frame.to_numpy().tolist()})
                answer = response.json()["predictions"] if response.status_code == 200 else None
            assert response.status_code == 200, response.text
            variant = response.headers["x-model-variant"]
            assert answer == expected[variant], (variant, answer)
            seen[variant] += 1
        metrics = client.get("/metrics").text
    # 40 requests at 50/50: one variant never chosen has probability 2 * 0.5**40.
    assert set(seen) == {"a", "b"}, seen
    assert 'ab_router_requests_total{code="200",variant="a"}' in metrics
    with capsys.disabled():
        print(f"\n  router {MODEL}: 40 requests (V1 and V2 alternately), by variant {dict(seen)}, every answer equal")
        print(f"  to its variant's model: a {expected['a']}, b {expected['b']}")


def test_the_servers_write_the_inference_log_from_the_container(stack, deployment):
    import psycopg

    assert stack.endpoints.monitoring_db_url, "the local stack has an inference log"
    server = deployment.servers["a"]
    request_id = uuid.uuid4().hex
    frame, _ = synthetic_data(rows=5, seed=3)
    response = httpx.post(
        f"{server.url}/v1/models/{MODEL}-a:predict",
        json={"instances": frame.to_numpy().tolist()},
        headers={"x-request-id": request_id, **stack.endpoints.serving_headers()},
    )
    assert response.status_code == 200
    # Written by the container's user to its journal in its working folder, then shipped to PostgreSQL.
    query = "SELECT deployment, model_name, model_version FROM inference_log WHERE request_id = %s"
    deadline, rows = time.monotonic() + 60, []
    while len(rows) < 5 and time.monotonic() < deadline:
        with psycopg.connect(stack.endpoints.monitoring_db_url, connect_timeout=5) as conn:
            rows = conn.execute(query, (request_id,)).fetchall()
        time.sleep(0.5)
    assert rows == [(f"{MODEL}-a", MODEL, "1")] * 5, server.logs()
    listing = _docker("exec", server.name, "ls", "-ln", "/work").stdout
    assert listing.strip() != "total 0", "the journal is in the server's working folder"
    assert all(" 10001 10001 " in line for line in listing.splitlines()[1:]), listing


def _dataset(name: str, uri: str) -> dict:
    return {"artifacts": [{"name": name, "type": {"schemaTitle": "system.Dataset"}, "uri": uri, "metadata": {}}]}


def test_the_pipeline_components_run_in_the_image(image, stack, tmp_path_factory, capsys):
    """The training pipeline compiled for the image; each step's own command (KFP's executor) run in it.

    The steps run as KFP's launcher would start them, minus the launcher: `preprocess` reads the CSV from the
    stack's S3 and writes its dataset where KFP maps a `minio://` artifact (/minio, writable by the image's
    user), `train` reads it there, logs to the stack's MLflow and registers the model.
    """
    import yaml
    from mlflow import MlflowClient

    from sandbox.pipelines import training
    from sandbox.pipelines.config import PipelinesConfig

    folder = tmp_path_factory.mktemp("image-pipeline")
    frame, labels = synthetic_data(rows=300, seed=5)
    frame["label"] = labels
    csv = folder / "train.csv"
    frame.to_csv(csv, index=False)
    key = f"image-smoke/{uuid.uuid4().hex[:8]}/train.csv"
    stack.endpoints.minio_client().fput_object(stack.endpoints.data_bucket, key, str(csv))
    spec_path = folder / "pipeline.yaml"
    sha = training.compile_spec(spec_path, PipelinesConfig(base_image=image))
    executors = yaml.safe_load(spec_path.read_text())["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {image}

    env_file = folder / "sandbox.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in stack.endpoints.env().items()))
    name = f"ml-sandbox-image-test-kfp-{uuid.uuid4().hex[:8]}"
    _docker(
        "run", "--detach", "--name", name, "--network", "host", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--env-file", str(env_file),
        image, "python3", "-c", "import time; time.sleep(900)",
    )  # fmt: skip
    try:

        def step(executor: str, executor_input: dict) -> dict:
            container = executors[executor]["container"]
            args = [a.replace("{{$}}", json.dumps(executor_input)) for a in container["args"]]
            result = _docker("exec", name, *container["command"], *args, check=False, timeout=600)
            assert result.returncode == 0, f"{executor} exited {result.returncode}:\n{result.stderr[-3000:]}"
            output = executor_input["outputs"]["outputFile"]
            return json.loads(_docker("exec", name, "cat", output).stdout)["parameterValues"]

        cleaned_uri = f"minio://mlpipeline/image-smoke/{uuid.uuid4().hex[:8]}/cleaned"
        tracking_uri = stack.endpoints.mlflow_tracking_uri
        preprocessed = step(
            "exec-preprocess",
            {
                "inputs": {"parameterValues": {"data_uri": f"s3://{stack.endpoints.data_bucket}/{key}",
                                               "tracking_uri": tracking_uri}},
                "outputs": {"artifacts": {"cleaned": _dataset("cleaned", cleaned_uri)},
                            "outputFile": "/tmp/kfp/preprocess/output_metadata.json"},
            },
        )  # fmt: skip
        assert preprocessed == {"rows": 300}
        model_name = f"image-smoke-pipeline-{uuid.uuid4().hex[:6]}"
        trained = step(
            "exec-train",
            {
                "inputs": {
                    "artifacts": {"cleaned": _dataset("cleaned", cleaned_uri)},
                    "parameterValues": {
                        "model_name": model_name, "seed": 0, "tracking_uri": tracking_uri, "spec_sha256": sha,
                        "data_version": training.data_version(csv), "experiment": "image-smoke",
                        "label_column": "label", "trigger": "image-test",
                    },
                },
                "outputs": {"outputFile": "/tmp/kfp/train/output_metadata.json"},
            },
        )  # fmt: skip
        dataset = _docker("exec", name, "ls", "-ln", cleaned_uri.replace("minio://", "/minio/")).stdout
        assert " 10001 10001 " in dataset, dataset
    finally:
        _docker("rm", "--force", name, check=False)

    assert trained["version"] == "1" and 0.5 < trained["accuracy"] <= 1.0, trained
    with patched_environ(stack.endpoints.env()):
        client = MlflowClient(tracking_uri)
        registered = client.get_model_version(model_name, "1")
        run = client.get_run(trained["run_id"])
    assert registered.run_id == trained["run_id"]
    assert run.data.tags["pipeline_spec_sha256"] == sha
    with capsys.disabled():
        print(f"\n  pipeline steps in the image: preprocess {preprocessed}, train {trained}")


def _notebook_imports() -> list[str]:
    """The modules the starter notebooks (notebooks/*.ipynb) import, standard library left out."""
    import ast

    modules: set[str] = set()
    for path in sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            # IPython's magics and shell escapes are not Python: leave those lines out.
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.Import):
                    modules.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module)
    return sorted(m for m in modules if m.split(".")[0] not in sys.stdlib_module_names)


def test_the_image_runs_jupyterlab_and_has_what_the_notebooks_import(image):
    """The kind profile's notebooks Deployment runs `python -m jupyterlab` in the image; its kernels (ipykernel, the
    image's Python) import what the starter notebooks import."""
    modules = _notebook_imports()
    assert {"mlflow", "boto3", "pandas", "sandbox.config"} <= set(modules), modules
    lab = _docker("run", "--rm", "--network", "none", image, "python", "-m", "jupyterlab", "--version")
    assert lab.stdout.strip() == version("jupyterlab"), lab.stdout + lab.stderr
    script = (
        "import importlib, sys; "
        f"[importlib.import_module(m) for m in {[*modules, 'ipykernel_launcher', 'IPython.display']!r}]; "
        "print(sys.executable)"
    )
    kernel = _docker("run", "--rm", "--network", "none", image, "python", "-c", script)
    assert kernel.stdout.strip() == "/opt/venv/bin/python", kernel.stdout + kernel.stderr


def test_jupyterlab_in_the_image_serves_and_starts_a_kernel(image):
    """JupyterLab as the notebooks Deployment starts it (token from the environment, terminals off, kernels on
    the loopback), as the image's user with every capability dropped: its API answers and a kernel starts."""
    port, token = free_port(), uuid.uuid4().hex
    name = f"ml-sandbox-image-test-lab-{uuid.uuid4().hex[:8]}"
    argv = [
        *("python", "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={LOOPBACK}", f"--ServerApp.port={port}"),
        *("--ServerApp.port_retries=0", "--ServerApp.root_dir=/work", "--ServerApp.terminals_enabled=False"),
        *("--ServerApp.jpserver_extensions=jupyter_server_terminals=False", "--KernelManager.ip=127.0.0.1"),
        *("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url="),
    ]
    env = [
        *("--env", f"JUPYTER_TOKEN={token}", "--env", "JUPYTER_CONFIG_DIR=/tmp/jupyter/config"),
        *("--env", "JUPYTER_DATA_DIR=/tmp/jupyter/data", "--env", "JUPYTER_RUNTIME_DIR=/tmp/jupyter/runtime"),
        *("--env", "IPYTHONDIR=/tmp/ipython"),
    ]
    _docker(
        "run", "--detach", "--name", name, "--network", "host", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", *env, image, *argv,
    )  # fmt: skip
    lab = Container(name, port)
    try:
        _wait_ready(lab, "/api")
        headers = {"Authorization": f"token {token}"}
        assert httpx.get(f"{lab.url}/api/kernels", timeout=10).status_code == 403, "the API asks for the token"
        started = httpx.post(f"{lab.url}/api/kernels", json={"name": "python3"}, headers=headers, timeout=60)
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        # The kernel runs code sent over the server's websocket (Jupyter's messaging protocol): the kernels'
        # imports, in the kernel itself.
        import websocket  # websocket-client (a dependency of the Kubernetes client)

        code = "import mlflow, boto3, pandas, sklearn, sandbox.config, sys; print('kernel', sys.executable)"
        session, msg_id = uuid.uuid4().hex, uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "", "version": "5.3"}
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        ws = websocket.create_connection(
            f"ws://{LOOPBACK}:{port}/api/kernels/{kernel_id}/channels?session_id={session}",
            header=[f"Authorization: token {token}"],
            timeout=120,
        )
        try:
            ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                "channel": "shell", "buffers": []}))  # fmt: skip
            output, reply = "", None
            while reply is None:
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if message["msg_type"] == "stream":
                    output += message["content"]["text"]
                elif message["msg_type"] == "execute_reply":
                    reply = message["content"]
        finally:
            ws.close()
        assert reply["status"] == "ok", (reply, lab.logs())
        assert output.strip() == "kernel /opt/venv/bin/python", output
    finally:
        _docker("rm", "--force", name, check=False)


def test_mlflow_server_runs_in_the_image(image):
    """The kind profile's MLflow Deployment runs `python -m sandbox.tracking_server` on the image (MLflow's app with
    basic auth in one uvicorn process, no job runner): it starts as the image's user with every capability dropped
    and answers /health."""
    port = free_port()
    name = f"ml-sandbox-image-test-mlflow-{uuid.uuid4().hex[:8]}"
    _docker(
        "run", "--detach", "--name", name, "--network", "host", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--env", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false",
        "--env", "HOME=/tmp", "--env", "MLFLOW_BACKEND_STORE_URI=sqlite:////tmp/mlflow.db",
        "--env", f"MLFLOW_AUTH_ADMIN_PASSWORD={uuid.uuid4().hex}",
        "--env", f"MLFLOW_FLASK_SERVER_SECRET_KEY={uuid.uuid4().hex}",
        image, "python", "-m", "sandbox.tracking_server", "--host", LOOPBACK, "--port", str(port), "--workers", "1",
        "--artifacts-destination", "/tmp/artifacts", "--allowed-hosts", f"{LOOPBACK}:{port}",
    )  # fmt: skip
    try:
        _wait_ready(Container(name, port), "/health")
    finally:
        _docker("rm", "--force", name, check=False)
