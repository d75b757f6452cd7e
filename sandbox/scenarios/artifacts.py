"""What one checklist run made on a platform the sandbox does not own: found by the run's id, tagged, deleted.

On such a platform (``Endpoints.owned`` is False: the remote profile) every name a
scenario gives is per run (``ScenarioContext.scenario_name`` and ``unique`` put the
run's id in it) and every MLflow entity carries the tag ``RUN_ID_TAG``. After each
scenario the engine calls ``find`` (what carries this run's tag or this run's id in a
prefixed name), ``tag`` (whatever a library made without the tag gets it: runs made
by ``MlflowClient.create_run``, logged models) and, unless the run keeps its artifacts,
``delete``. Nothing else is looked at twice: an experiment, model or S3 key that is
not this run's is never tagged, changed or deleted.

What "deleted" means on MLflow: registered models are deleted outright; experiments,
their runs and logged models are deleted the way MLflow's API deletes them (moved to
the `deleted` stage; the server's `mlflow gc` purges them), and their artifacts are
deleted from the artifact store first, so the object store holds nothing of the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sandbox.endpoints import Endpoints
from sandbox.pipelines.runner import search_all
from sandbox.scenarios.names import RUN_ID_TAG, SCENARIO_PREFIX, is_scenario_name


def owns(name: str, run_id: str) -> bool:
    """Whether ``name`` is one this run gave: the reserved prefix, and the run's id as one of its '-' parts."""
    return is_scenario_name(name) and re.search(rf"(^|-){re.escape(run_id)}(-|$)", name) is not None


@dataclass
class RunArtifacts:
    run_id: str
    experiments: list = field(default_factory=list)  # mlflow.entities.Experiment
    runs: list = field(default_factory=list)  # mlflow.entities.Run, in those experiments
    logged_models: list = field(default_factory=list)  # mlflow.entities.LoggedModel, in those experiments
    models: list[str] = field(default_factory=list)  # registered model names
    objects: dict[str, list[str]] = field(default_factory=dict)  # bucket -> keys
    inference_rows: int = 0  # rows of those models in the inference log

    @property
    def empty(self) -> bool:
        return not (self.experiments or self.models or self.object_count or self.inference_rows)

    @property
    def object_count(self) -> int:
        return sum(len(keys) for keys in self.objects.values())

    def summary(self) -> str:
        parts = [
            f"{len(self.experiments)} experiment(s) ({len(self.runs)} run(s), {len(self.logged_models)} logged "
            f"model(s))",
            f"{len(self.models)} registered model(s)",
            f"{self.object_count} S3 object(s)",
        ]
        if self.inference_rows:
            parts.append(f"{self.inference_rows} inference-log row(s)")
        return ", ".join(parts)


def _client(endpoints: Endpoints):
    return endpoints.mlflow_client()


def find(endpoints: Endpoints, run_id: str) -> RunArtifacts:
    """Everything on the platform that this run made (by its tag, or its id in a prefixed name)."""
    found = RunArtifacts(run_id)
    by_tag = f"tags.`{RUN_ID_TAG}` = '{run_id}'"
    by_name = f"name LIKE '{SCENARIO_PREFIX}%{run_id}%'"
    if "mlflow" in endpoints.capabilities:
        from mlflow.entities import ViewType

        client = _client(endpoints)
        experiments = {}
        for filter_string in (by_tag, by_name):
            for experiment in search_all(
                client.search_experiments, view_type=ViewType.ACTIVE_ONLY, filter_string=filter_string
            ):
                if _is_ours(experiment.name, experiment.tags, run_id):
                    experiments[experiment.experiment_id] = experiment
        found.experiments = list(experiments.values())
        if experiments:
            ids = list(experiments)
            found.runs = search_all(client.search_runs, experiment_ids=ids, run_view_type=ViewType.ACTIVE_ONLY)
            found.logged_models = search_all(client.search_logged_models, experiment_ids=ids)
        models = {}
        for filter_string in (by_tag, by_name):
            for model in search_all(client.search_registered_models, filter_string=filter_string):
                if _is_ours(model.name, model.tags, run_id):
                    models[model.name] = model
        found.models = sorted(models)
    if "s3" in endpoints.capabilities:
        s3 = endpoints.minio_client()
        for bucket in endpoints.buckets:
            keys = [
                obj.object_name
                for obj in s3.list_objects(bucket, prefix=SCENARIO_PREFIX, recursive=True)
                if owns(obj.object_name.split("/", 1)[0], run_id)
            ]
            if keys:
                found.objects[bucket] = keys
    if endpoints.monitoring_db_url and found.models:
        found.inference_rows = _inference_rows(endpoints.monitoring_db_url, found.models, delete=False)
    return found


def _is_ours(name: str, tags: dict, run_id: str) -> bool:
    return owns(name, run_id) or (is_scenario_name(name) and tags.get(RUN_ID_TAG) == run_id)


def tag(endpoints: Endpoints, found: RunArtifacts) -> int:
    """Give every MLflow entity of the run the run's tag; returns how many lacked it."""
    if not (found.experiments or found.models):
        return 0
    client = _client(endpoints)
    value, added = found.run_id, 0
    for experiment in found.experiments:
        if experiment.tags.get(RUN_ID_TAG) != value:
            client.set_experiment_tag(experiment.experiment_id, RUN_ID_TAG, value)
            added += 1
    for run in found.runs:
        if run.data.tags.get(RUN_ID_TAG) != value:
            client.set_tag(run.info.run_id, RUN_ID_TAG, value)
            added += 1
    for model in found.logged_models:
        if (model.tags or {}).get(RUN_ID_TAG) != value:
            client.set_logged_model_tags(model.model_id, {RUN_ID_TAG: value})
            added += 1
    for name in found.models:
        if client.get_registered_model(name).tags.get(RUN_ID_TAG) != value:
            client.set_registered_model_tag(name, RUN_ID_TAG, value)
            added += 1
    return added


def delete(endpoints: Endpoints, found: RunArtifacts) -> None:
    """Delete what ``find`` found: inference rows, registered models, artifacts, experiments, S3 objects."""
    if endpoints.monitoring_db_url and found.models:
        _inference_rows(endpoints.monitoring_db_url, found.models, delete=True)
    if found.experiments or found.models:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        client = _client(endpoints)
        for name in found.models:
            client.delete_registered_model(name)
        for experiment in found.experiments:
            # The experiment's artifact root holds its runs' and logged models' artifacts (and nothing else).
            get_artifact_repository(
                experiment.artifact_location, tracking_uri=endpoints.mlflow_tracking_uri
            ).delete_artifacts()
            for model in found.logged_models:
                if model.experiment_id == experiment.experiment_id:
                    client.delete_logged_model(model.model_id)
            client.delete_experiment(experiment.experiment_id)  # and its runs
    if found.objects:
        from minio.deleteobjects import DeleteObject

        s3 = endpoints.minio_client()
        for bucket, keys in found.objects.items():
            errors = list(s3.remove_objects(bucket, [DeleteObject(key) for key in keys]))
            if errors:
                raise RuntimeError(f"S3 refused to delete {len(errors)} object(s) in {bucket}: {errors[0]}")


def settle(endpoints: Endpoints, run_id: str, *, keep: bool = False) -> RunArtifacts:
    """A run's clean-up in one call: ``find`` what it made, ``tag`` it, and unless ``keep``, ``delete`` it."""
    found = find(endpoints, run_id)
    tag(endpoints, found)
    if not keep:
        delete(endpoints, found)
    return found


def _inference_rows(dsn: str, models: list[str], *, delete: bool) -> int:
    import psycopg

    from sandbox.serving.inference_log import TABLE

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        if delete:
            return conn.execute(f"DELETE FROM {TABLE} WHERE model_name = ANY(%s)", (models,)).rowcount
        return conn.execute(f"SELECT count(*) FROM {TABLE} WHERE model_name = ANY(%s)", (models,)).fetchone()[0]
