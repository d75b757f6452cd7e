"""The stack's generated credentials as Secrets (one per concern), applied before any workload that reads one."""

from __future__ import annotations

import json
from typing import Any

from sandbox.profiles.kube.manifests.mlflow import MLFLOW_AUTH_CONFIG_KEY
from sandbox.profiles.kube.manifests.s3 import seaweedfs_identities
from sandbox.profiles.kube.manifests.serving import COMPONENT as SERVING_COMPONENT
from sandbox.profiles.kube.manifests.spec import (
    DATABASE,
    DB_USER,
    MLFLOW,
    MONITORING_DATABASE,
    NOTEBOOKS,
    PORTS,
    POSTGRES,
    S3,
    SECRET_MLFLOW,
    SECRET_NOTEBOOKS,
    SECRET_POSTGRES,
    SECRET_S3,
    SECRET_SERVING,
    StackSpec,
    secret,
)
from sandbox.tracking_server import auth_config

TITLE = "Secrets (generated credentials)"


def objects(spec: StackSpec) -> list[dict[str, Any]]:
    s = spec.secrets
    db = f"{spec.host(POSTGRES)}:{PORTS[POSTGRES]}"
    postgres = {
        "username": DB_USER,
        "password": s.postgres_password,
        "url": f"postgresql://{DB_USER}:{s.postgres_password}@{db}/{DATABASE}",
        "monitoring-url": f"postgresql://{DB_USER}:{s.postgres_password}@{db}/{MONITORING_DATABASE}",
    }
    s3 = {"access-key": s.s3_access_key, "secret-key": s.s3_secret_key}
    if spec.object_store == "seaweedfs":
        s3["s3.json"] = json.dumps(seaweedfs_identities(s.s3_access_key, s.s3_secret_key), indent=1)
    backend = f"postgresql+psycopg://{DB_USER}:{s.postgres_password}@{db}/{DATABASE}"
    made = [
        secret(spec, POSTGRES, SECRET_POSTGRES, postgres),
        secret(spec, S3, SECRET_S3, s3),
        secret(
            spec,
            MLFLOW,
            SECRET_MLFLOW,
            {
                "backend-store-uri": backend,
                # MLflow's basic-auth app: its settings (the user store's URI holds the password), its admin's
                # password and its CSRF key.
                MLFLOW_AUTH_CONFIG_KEY: auth_config(backend),
                "admin-password": s.mlflow_admin_password,
                "flask-secret": s.mlflow_flask_secret,
            },
        ),
    ]
    # Applied whether or not serving.auth is on: a deployment made with the token keeps finding its Secret.
    made.append(secret(spec, SERVING_COMPONENT, SECRET_SERVING, {"token": s.serving_token}))
    if spec.notebooks:
        made.append(secret(spec, NOTEBOOKS, SECRET_NOTEBOOKS, {"token": s.jupyter_token}))
    return made
