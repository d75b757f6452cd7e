"""MLServer (the runtime KServe uses for MLflow models) as a peer in the serving benchmark.

`mlserver` and `mlserver-mlflow` go into a virtualenv of the benchmark's own
(created on first use under the cache folder, reused while its requirements
are unchanged), with the model's own stack (mlflow, scikit-learn, skops, numpy,
pandas) pinned to the project's versions so both servers run the same model
code. The model's artifacts are downloaded from the sandbox's registry into a
local folder that `model-settings.json` points at; adaptive batching matches
the sandbox's micro-batching, inference runs in the main process
(`parallel_workers: 0`), and the HTTP, gRPC and metrics servers all bind
127.0.0.1 on free ports.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import httpx
from rich.console import Console

from benchmarks.servers import (
    LOOPBACK,
    ServerUnderTest,
    compact_json,
    free_port,
    start_group,
    wait_until_ready,
)

MLSERVER_VERSION = "1.7.1"
MLSERVER_PACKAGES = [f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_VERSION}"]
# The model's own stack, pinned to what the project's virtualenv runs.
SHARED_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas")
PROGRESS_PREFIXES = ("Collecting ", "Installing collected", "Successfully installed", "ERROR", "error:")

console = Console(width=150, highlight=False)


def requirements() -> list[str]:
    return [*MLSERVER_PACKAGES, *(f"{name}=={version(name)}" for name in SHARED_PACKAGES)]


@functools.cache
def ensure_venv(cache_dir: Path) -> Path:
    """The MLServer virtualenv under cache_dir: created on first use, reused after; returns its folder."""
    venv = cache_dir / "mlserver-venv"
    stamp = venv / ".installed"
    wanted = "\n".join(requirements()) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and (venv / "bin" / "mlserver").exists():
        console.print(f"MLServer virtualenv: reusing {venv}")
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log = cache_dir / "mlserver-venv-install.log"
    console.print(f"MLServer virtualenv: creating {venv} (first use; about a minute)")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", *requirements()]
    console.print(f"  pip install {' '.join(requirements())}")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with log.open("w") as handle:
        pip = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            collected = 0
            assert pip.stdout is not None
            for line in pip.stdout:
                handle.write(line)
                if line.startswith("Collecting "):
                    collected += 1
                    if collected % 10 == 1:
                        console.print(f"  [{time.monotonic() - started:5.0f} s] {line.strip()} ({collected} so far)")
                elif line.startswith(PROGRESS_PREFIXES):
                    console.print(f"  [{time.monotonic() - started:5.0f} s] {line.strip()[:120]}")
            code = pip.wait()
        finally:
            if pip.poll() is None:
                pip.kill()
                pip.wait()
    if code != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"installing MLServer failed (exit {code}); see {log}")
    stamp.write_text(wanted)
    console.print(f"MLServer virtualenv ready in {time.monotonic() - started:.0f} s ({venv})")
    return venv


class MLServerPeer(ServerUnderTest):
    """MLServer + mlserver-mlflow serving the same model from a local folder, spoken to in V2 (one input per column)."""

    key = "mlserver"
    expect = "outputs"

    @property
    def label(self) -> str:
        batching = f"{self.ctx.batch_size} / {self.ctx.batch_wait_ms:g} ms"
        return f"MLServer {MLSERVER_VERSION} + mlserver-mlflow, batching {batching}"

    def start(self) -> None:
        import mlflow

        venv = ensure_venv(self.ctx.cache_dir)
        root = self.ctx.workdir / "mlserver"
        model_dir = root / "artifacts"
        model_dir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.ctx.endpoints.mlflow_tracking_uri)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        local_model = mlflow.artifacts.download_artifacts(artifact_uri=self.ctx.model_uri, dst_path=str(model_dir))
        self.port = free_port()
        settings = {
            "debug": False,  # its default (True) writes an access-log line per request
            "host": LOOPBACK,
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
            "metrics_dir": str(root / "metrics"),
            "environments_dir": str(root / "envs"),
        }
        model_settings = {
            "name": self.ctx.model_name,
            "implementation": "mlserver_mlflow.MLflowRuntime",
            "max_batch_size": self.ctx.batch_size,
            "max_batch_time": self.ctx.batch_wait_ms / 1000,
            "parameters": {"uri": str(Path(local_model).resolve())},
        }
        repository = root / "repository"
        (repository / self.ctx.model_name).mkdir(parents=True, exist_ok=True)
        (repository / "settings.json").write_text(json.dumps(settings, indent=2))
        (repository / self.ctx.model_name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        self.proc = start_group([str(venv / "bin" / "mlserver"), "start", str(repository)], log=self.log, env=env)
        ready = f"http://{LOOPBACK}:{self.port}/v2/models/{self.ctx.model_name}/ready"
        wait_until_ready(
            self.label,
            lambda: httpx.get(ready, timeout=2, trust_env=False).status_code == 200,
            proc=self.proc,
            log=self.log,
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v2/models/{self.ctx.model_name}/infer"

    def body(self, row: Sequence[float]) -> str:
        # A column-signature MLflow model takes one V2 input per column.
        inputs = [
            {"name": name, "shape": [1], "datatype": "FP64", "data": [float(value)]}
            for name, value in zip(self.ctx.columns, row, strict=True)
        ]
        return compact_json({"inputs": inputs})
