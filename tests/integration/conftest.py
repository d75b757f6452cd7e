"""Real local stacks, driven through the CLI as a user would.

Every test can run alone and in any order: a fixture hands each test the state it
needs (a running stack, a deployment, a model), whatever an earlier test left.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.stacks import Stack, _session_stack, local_pid, mlflow_env, stack  # noqa: F401 - shared fixtures


@pytest.fixture(scope="module")
def serving_stack(tmp_path_factory) -> Stack:
    """A stack of its own with the reference model (RandomForest, 8 features) registered twice."""
    from sandbox.serving.reference_model import register_reference_model

    served = Stack(tmp_path_factory.mktemp("serving") / "sandbox")
    served.cli("up")
    try:
        uri = served.endpoints().mlflow_tracking_uri
        register_reference_model(uri, "fraud-detector", n_estimators=20, seed=0)
        register_reference_model(uri, "fraud-detector", n_estimators=20, seed=1)
        yield served
    finally:
        served.cli("down", "--purge", check=False)


@dataclass
class MatrixStack:
    stack: Stack
    models: dict  # key -> tests.integration.model_matrix.MatrixModel, each deployed as deployment_name(key)

    @staticmethod
    def deployment_name(key: str) -> str:
        return "m-" + key.replace("_", "-")

    def endpoint(self, key: str) -> dict:
        return self.stack.status()["endpoints"]["inference"][self.deployment_name(key)]


@pytest.fixture(scope="session")
def matrix_stack(tmp_path_factory) -> MatrixStack:
    """A matrix of its own serving six models logged the ways users log them (tests/integration/model_matrix.py)."""
    from tests.integration.model_matrix import build_matrix

    matrix = Stack(tmp_path_factory.mktemp("matrix") / "sandbox")
    matrix.cli("up")
    try:
        models = build_matrix(matrix.endpoints().mlflow_tracking_uri)
        for key, model in models.items():
            matrix.cli("serve", "deploy", MatrixStack.deployment_name(key), "--model", model.uri, "--batch-size", "16")
        yield MatrixStack(matrix, models)
    finally:
        matrix.cli("down", "--purge", check=False)
