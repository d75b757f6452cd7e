"""The serving control plane's contract: the same requests give the same outcome, status and exit code on every
runtime that deploys.

One transcript of requests (deploy, redeploy, split, re-split with moved weights, the refused ones, undeploys,
unknown names, a GPU count no node holds) runs through `Deployments` on:
- the local profile's process runtime: real model servers and a real router, as processes on 127.0.0.1, serving
  a model saved to a folder (no MLflow needed; `models:/` lookups are not part of the contract);
- the KServe runtime of the Kubernetes profiles, against the FAKE cluster and the FAKE KServe controller
  (tests/fakes): objects are applied and made Ready by the fakes; nothing runs them.
Each step's answer (done, or the error's type and exit code) and the statuses after it must equal `EXPECTED`, and
what runs must be exactly what is recorded (a removed deployment leaves no server or object behind).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sandbox import wire
from sandbox.config import load_config
from sandbox.errors import SandboxError
from sandbox.gpu import GpuConfig
from sandbox.profiles.base import serving_planner
from sandbox.serving.deployments import Deployments
from sandbox.serving.specs import DeploymentSpec, VariantSpec
from tests.factories import make_endpoints

CONTEXT = "minikube"
NS = "ml-sandbox"
INSTANCE = "sb-contract"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """Two model folders, as `mlflow.pyfunc.load_model` (and so the model server) loads them."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 3))
    folders = []
    for i in (1, 2):
        folder = tmp_path_factory.mktemp("models") / f"m{i}"
        mlflow.sklearn.save_model(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), folder)
        folders.append(str(folder))
    return folders[0], folders[1]


@dataclass
class Platform:
    serving: Deployments
    running: Any  # () -> set of names something runs for (a process, an InferenceService or router)
    close: Any = lambda: None  # ends what the platform's tools started (the fake cluster's port-forwards)


def local_platform(tmp_path: Path) -> Platform:
    from sandbox.profiles.local.scheduler import LocalScheduler
    from sandbox.profiles.local.serving import LocalProcessRuntime
    from sandbox.profiles.local.state import PortMap, SandboxDir

    sandbox = SandboxDir(tmp_path / "sb")
    sandbox.root.mkdir(parents=True)
    gpu = GpuConfig()
    runtime = LocalProcessRuntime(
        sandbox,
        PortMap(sandbox),
        make_endpoints(serving_token="contract-token"),  # the servers require it; readiness asks without it
        startup_timeout=180,
        scheduler=LocalScheduler(gpu, sandbox.root),
    )

    def running() -> set[str]:
        folder = sandbox.root / "deployments"
        names = [p.name for p in folder.iterdir()] if folder.exists() else []
        return {name for name in names if runtime.process(name).running() is not None}

    return Platform(serving_planner(load_config(), runtime), running)


def kube_platform(tmp_path: Path, monkeypatch) -> Platform:
    from sandbox.profiles import get_profile
    from tests.fakes import FakeTools
    from tests.fakes.stack import adopt_stack, seed_stack

    fakes = FakeTools(tmp_path, monkeypatch)
    seed_stack(fakes, CONTEXT, NS, INSTANCE)
    prof = get_profile(load_config(profile="cluster", dir=tmp_path / "sb", **{"cluster.context": CONTEXT}))
    adopt_stack(prof, CONTEXT, NS, INSTANCE)

    def running() -> set[str]:
        """InferenceServices (a model, a variant) and the routers' Deployments (a split)."""
        found = [key.split("/") for key in fakes.objects(CONTEXT)]
        models = {name for kind, _, name in found if kind == "InferenceService"}
        return models | {
            name.removesuffix("-router") for kind, _, name in found if kind == "Deployment" and name.endswith("-router")
        }

    return Platform(prof.serving(), running, lambda: fakes.stop_servers(prof.folder / "forwards"))


@pytest.fixture(params=["local", "kube"])
def platform(request, tmp_path, monkeypatch):
    made = local_platform(tmp_path) if request.param == "local" else kube_platform(tmp_path, monkeypatch)
    yield made
    try:
        for status in made.serving.statuses():  # what a failed step left
            if not status.kind.startswith("variant"):
                made.serving.undeploy(status.name)
    finally:
        made.close()


def answer(call) -> str:
    try:
        call()
    except SandboxError as exc:
        return f"{type(exc).__name__} (exit {int(exc.exit_code)}): {exc}"
    return "done"


def statuses(serving: Deployments) -> dict[str, tuple[str, str, str]]:
    return {s.name: (s.kind, s.state, s.detail) for s in serving.statuses()}


def transcript(platform: Platform, m1: str, m2: str) -> list[tuple[str, str, dict]]:
    serving = platform.serving
    split = [VariantSpec(label="a", model_uri=m1, weight=80), VariantSpec(label="b", model_uri=m2, weight=20)]
    moved = [VariantSpec(label="a", model_uri=m1, weight=30), VariantSpec(label="c", model_uri=m2, weight=70)]
    steps = [
        ("deploy cd-a", lambda: serving.deploy(DeploymentSpec.model("cd-a", m1, inference_log=False))),
        ("redeploy cd-a, batched", lambda: serving.deploy(DeploymentSpec.model("cd-a", m2, batch_size=4))),
        ("split ab 80/20", lambda: serving.deploy(DeploymentSpec.split("ab", split, inference_log=False))),
        ("re-split ab: a 30, c 70", lambda: serving.deploy(DeploymentSpec.split("ab", moved, inference_log=False))),
        ("redeploy the variant ab-a", lambda: serving.deploy(DeploymentSpec.model("ab-a", m2))),
        ("deploy a model over the split", lambda: serving.deploy(DeploymentSpec.model("ab", m1))),
        ("split over the model cd-a", lambda: serving.deploy(DeploymentSpec.split("cd-a", split))),
        ("split cd, whose variant cd-a is a model", lambda: serving.deploy(DeploymentSpec.split("cd", split))),
        ("undeploy the variant ab-c", lambda: serving.undeploy("ab-c")),
        ("undeploy an unknown name", lambda: serving.undeploy("nope")),
        ("deploy 99 GPUs", lambda: serving.deploy(DeploymentSpec.model("big", m1, gpus=99))),
        ("undeploy the split ab", lambda: serving.undeploy("ab")),
        ("undeploy cd-a", lambda: serving.undeploy("cd-a")),
    ]
    out = []
    for title, call in steps:
        result = answer(call)
        now = statuses(serving)
        assert platform.running() == set(now), f"after {title!r}: what runs is not what is recorded"
        out.append((title, result, now))
    return out


MODEL = ("model", "running", "no batching, inference log off")
BATCHED = ("model", "running", "batch 4/5ms")
VARIANT = ("variant of ab", "running", "no batching, inference log off")


def expected(m1: str, m2: str) -> list[tuple[str, str, dict]]:
    split_ab = {"ab-a": VARIANT, "ab-b": VARIANT, "ab": ("split", "running", f"a={m1} (80), b={m2} (20)")}
    moved_ab = {"ab-a": VARIANT, "ab-c": VARIANT, "ab": ("split", "running", f"a={m1} (30), c={m2} (70)")}
    after_move = {"cd-a": BATCHED, **moved_ab}
    usage = "ConfigError (exit 2): "
    return [
        ("deploy cd-a", "done", {"cd-a": MODEL}),
        ("redeploy cd-a, batched", "done", {"cd-a": BATCHED}),
        ("split ab 80/20", "done", {"cd-a": BATCHED, **split_ab}),
        ("re-split ab: a 30, c 70", "done", after_move),
        ("redeploy the variant ab-a", usage + "'ab-a' is a variant of 'ab'", after_move),
        ("deploy a model over the split", usage + "'ab' is an A/B split", after_move),
        ("split over the model cd-a", usage + "'cd-a' is a single-model deployment", after_move),
        (
            "split cd, whose variant cd-a is a model",
            usage + "'cd-a', the name of variant 'a' of 'cd', is already a deployment of its own",
            after_move,
        ),
        ("undeploy the variant ab-c", usage + "'ab-c' is a variant of 'ab'", after_move),
        ("undeploy an unknown name", usage + "no deployment named 'nope'", after_move),
        ("deploy 99 GPUs", usage + "no node has 99 GPU(s) (the most on one node: 4)", after_move),
        ("undeploy the split ab", "done", {"cd-a": BATCHED}),
        ("undeploy cd-a", "done", {}),
    ]


def test_every_runtime_gives_the_same_answers_statuses_and_leftovers(platform, models):
    got = transcript(platform, *models)
    assert got == expected(*models)


def test_local_servers_get_the_stacks_token_never_one_from_the_callers_environment(monkeypatch):
    from sandbox.profiles.local.serving import _server_env

    monkeypatch.setenv(wire.SERVING_TOKEN_ENV, "exported-by-the-caller")
    assert wire.SERVING_TOKEN_ENV not in _server_env(make_endpoints())  # `serving.auth: none`: open servers
    assert _server_env(make_endpoints(serving_token="the-stacks"))[wire.SERVING_TOKEN_ENV] == "the-stacks"
