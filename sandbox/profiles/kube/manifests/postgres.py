"""PostgreSQL: MLflow's backend store and the inference log's database, as a StatefulSet with its own volume."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.profiles.kube import versions
from sandbox.profiles.kube.manifests.spec import (
    DATABASE,
    DB_USER,
    MONITORING_DATABASE,
    PORTS,
    POSTGRES,
    SECRET_POSTGRES,
    StackSpec,
    labels,
    meta,
    pod_spec,
    resources,
    script,
    secret_ref,
    security_context,
    selector,
    service,
    template,
)

TITLE = "PostgreSQL"


def objects(spec: StackSpec) -> list[dict[str, Any]]:
    init_sql = script("postgres-init.sql", MONITORING_DATABASE=MONITORING_DATABASE, DB_USER=DB_USER)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(spec, POSTGRES, "postgres-init"),
        "data": {"10-monitoring.sql": init_sql},
    }
    env = [
        secret_ref("POSTGRES_USER", SECRET_POSTGRES, "username"),
        secret_ref("POSTGRES_PASSWORD", SECRET_POSTGRES, "password"),
        {"name": "POSTGRES_DB", "value": DATABASE},
        # Password logins only, hashed with SCRAM (no trust, no md5), on TCP and on the socket too: the
        # image's entrypoint exports PGPASSWORD for its own init scripts for this case
        # (docker-library/postgres docker-entrypoint.sh).
        {"name": "POSTGRES_INITDB_ARGS", "value": "--auth-host=scram-sha-256 --auth-local=scram-sha-256"},
        {"name": "POSTGRES_HOST_AUTH_METHOD", "value": "scram-sha-256"},
        # A folder below the mount point: a fresh volume may hold lost+found.
        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
    ]
    probe = {
        "exec": {"command": ["sh", "-c", f'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d {DATABASE}']},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 6,
    }
    container = {
        "name": "postgres",
        "image": versions.IMAGES["postgres"],
        "env": env,
        "ports": [{"name": "postgres", "containerPort": PORTS[POSTGRES], "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**copy.deepcopy(probe), "initialDelaySeconds": 30, "periodSeconds": 10},
        "resources": resources("100m", "256Mi", "2", "1Gi"),
        # The official image's `postgres` user (uid 999): the server refuses to run as root anyway.
        "securityContext": security_context(999),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True},
            {"name": "run", "mountPath": "/var/run/postgresql"},
        ],
    }
    pod = pod_spec(
        [container],
        fs_group=999,
        volumes=[
            {"name": "init", "configMap": {"name": "postgres-init"}},
            {"name": "run", "emptyDir": {}},
        ],
    )
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(spec, POSTGRES, "postgres-headless"),
        "spec": {
            "clusterIP": "None",
            "selector": selector(spec, POSTGRES),
            "ports": [{"name": "postgres", "port": PORTS[POSTGRES], "targetPort": PORTS[POSTGRES]}],
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(spec, POSTGRES, POSTGRES),
        "spec": {
            "serviceName": "postgres-headless",
            "replicas": 1,
            "selector": {"matchLabels": selector(spec, POSTGRES)},
            "template": template(spec, POSTGRES, pod),
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels(spec, POSTGRES)},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
                }
            ],
        },
    }
    client = service(spec, POSTGRES, PORTS[POSTGRES], PORTS[POSTGRES])
    return [config_map, headless, statefulset, client]
