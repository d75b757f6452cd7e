"""Checklist: data versioning (DVC) with its remote on the stack's S3 data bucket (`data` by default).

Version a dataset twice (git tags v1, v2), push both to the remote, check the
older version out into a clean clone that has never seen the data (empty DVC
cache), pull it from S3, retrain: the metrics equal the original run's. The
remote is a folder of this run's own in the bucket (`checklist-data-versioning-…`).
"""

from __future__ import annotations

import subprocess

import numpy as np
import yaml

from sandbox.scenarios import ScenarioContext, scenario

GIT = [
    "git",
    "-c",
    "user.name=sandbox-scenario",
    "-c",
    "user.email=scenario@sandbox.invalid",
    "-c",
    "init.defaultBranch=main",
]


def _dvc(ctx: ScenarioContext, workspace, *args: str, secret: str | None = None) -> None:
    import os

    from dvc.cli import main

    # In-process: one import of DVC for the whole scenario instead of one per command.
    # `--cd` changes the process's directory and leaves it there: put it back.
    # No usage analytics: each command would start a daemon that posts a report to analytics.dvc.org, traffic
    # off this machine (and half a CPU-second each, about 7 a checklist).
    os.environ["DVC_NO_ANALYTICS"] = "1"
    cwd = os.getcwd()
    try:
        code = main(["--cd", str(workspace), "-q", *args])
    finally:
        os.chdir(cwd)
    shown = " ".join("<secret>" if secret is not None and arg == secret else arg for arg in args)
    ctx.check(code == 0, f"`dvc {shown}` exited {code}")


def _git(workspace, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=workspace, check=True, capture_output=True, text=True).stdout


def _configure_remote(ctx: ScenarioContext, workspace, prefix: str) -> None:
    e = ctx.endpoints
    _dvc(ctx, workspace, "remote", "add", "--force", "-d", "sandbox", f"s3://{e.data_bucket}/{prefix}")
    _dvc(ctx, workspace, "remote", "modify", "sandbox", "endpointurl", e.s3_endpoint_url)
    # Credentials go to .dvc/config.local, which git ignores: they never reach a commit.
    # `--` ends the options: a value is never read as one, whatever it starts with.
    _dvc(ctx, workspace, "remote", "modify", "--local", "sandbox", "access_key_id", "--", e.s3_access_key)
    secret = e.s3_secret_key
    _dvc(ctx, workspace, "remote", "modify", "--local", "sandbox", "secret_access_key", "--", secret, secret=secret)


def _write_dataset(path, *, rows: int, seed: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 5)).round(5), columns=[f"x{i}" for i in range(5)])
    frame["label"] = ((frame["x0"] - frame["x2"]) > 0).astype(int)
    frame.to_csv(path, index=False)


def _train(path) -> tuple[float, float]:
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(path)
    x_train, x_test, y_train, y_test = train_test_split(
        frame.drop(columns=["label"]), frame["label"], test_size=0.3, random_state=3
    )
    model = RandomForestClassifier(n_estimators=30, random_state=3).fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean()), float(log_loss(y_test, model.predict_proba(x_test)))


def _md5(workspace) -> str:
    return yaml.safe_load((workspace / "data.csv.dvc").read_text())["outs"][0]["md5"]


@scenario(
    "data-versioning",
    title="Data versioning",
    checklist="Data versioning (DVC or LakeFS)",
    needs=["s3", "mlflow"],
    order=40,
    expected_s=8,
)
def data_versioning(ctx: ScenarioContext) -> None:
    import mlflow

    workspace = ctx.workdir / "project"
    workspace.mkdir()
    bucket = ctx.endpoints.data_bucket
    prefix = ctx.unique("data-versioning")  # the remote's folder in the data bucket, this run's own
    experiment = ctx.scenario_name("data-versioning")
    with ctx.step("git + dvc init, remote on the sandbox's S3 (credentials only in config.local)"):
        _git(workspace, "init", "-q")
        _dvc(ctx, workspace, "init")
        _configure_remote(ctx, workspace, prefix)
        _git(workspace, "add", ".dvc/config", ".dvc/.gitignore", ".dvcignore")
        _git(workspace, "commit", "-q", "-m", "dvc with the sandbox remote")
        ctx.check("secret_access_key" not in (workspace / ".dvc" / "config").read_text(), "a secret reached git")

    versions = {}
    for tag, rows, seed in (("v1", 800, 1), ("v2", 1200, 2)):
        with ctx.step(f"dataset {tag}: dvc add, git commit + tag, dvc push"):
            _write_dataset(workspace / "data.csv", rows=rows, seed=seed)
            _dvc(ctx, workspace, "add", "data.csv")
            _git(workspace, "add", "data.csv.dvc", ".gitignore")
            _git(workspace, "commit", "-q", "-m", f"data {tag}")
            _git(workspace, "tag", tag)
            _dvc(ctx, workspace, "push")
            versions[tag] = _md5(workspace)
    ctx.check(versions["v1"] != versions["v2"], "both versions have the same content hash")

    with ctx.step("the remote holds both versions in the S3 data bucket"):
        stored = {
            obj.object_name.replace("/", "")[-32:]
            for obj in ctx.endpoints.minio_client().list_objects(bucket, prefix=f"{prefix}/", recursive=True)
        }
        ctx.check({versions["v1"], versions["v2"]} <= stored, f"S3 has {len(stored)} objects, not both versions")

    with ctx.step("train on v1 and log the run with its data version"):
        _git(workspace, "checkout", "-q", "v1")
        _dvc(ctx, workspace, "checkout")
        accuracy, loss = _train(workspace / "data.csv")
        ctx.experiment(experiment)
        mlflow.set_tracking_uri(ctx.endpoints.mlflow_tracking_uri)
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            mlflow.set_tags({"data_version": f"md5:{versions['v1']}", "dvc_remote": f"s3://{bucket}/{prefix}"})
            mlflow.log_metrics({"accuracy": accuracy, "log_loss": loss})

    clone = ctx.workdir / "clean-clone"
    with ctx.step("clean clone at tag v1: empty cache, dvc pull from S3"):
        _git(ctx.workdir, "clone", "-q", str(workspace), str(clone))
        _git(clone, "checkout", "-q", "v1")
        ctx.check(not (clone / "data.csv").exists(), "the clone has the data before pulling")
        _configure_remote(ctx, clone, prefix)
        _dvc(ctx, clone, "pull")
        ctx.check(_md5(clone) == versions["v1"], "the clone's .dvc file is not v1")
        import hashlib

        pulled = hashlib.md5((clone / "data.csv").read_bytes()).hexdigest()  # DVC's content hash
        ctx.check(pulled == versions["v1"], f"pulled data hashes to {pulled}, v1 is {versions['v1']}")

    with ctx.step("retrain on the pulled v1: same metrics as the original run"):
        again_accuracy, again_loss = _train(clone / "data.csv")
        logged = ctx.mlflow_client().get_run(run.info.run_id).data.metrics
        ctx.check(
            (again_accuracy, again_loss) == (logged["accuracy"], logged["log_loss"]),
            f"retrained {again_accuracy}/{again_loss} vs logged {logged['accuracy']}/{logged['log_loss']}",
        )

    ctx.evidence(
        f"v1 md5 {versions['v1'][:10]}… (800 rows), v2 md5 {versions['v2'][:10]}… (1200 rows) "
        f"in s3://{bucket}/{prefix}; "
        f"a clean clone at v1 pulled it back and retrained to accuracy {again_accuracy:.4f}, "
        f"log loss {again_loss:.4f}: equal to run {run.info.run_id[:8]}…"
    )
    ctx.link("MLflow run", ctx.mlflow_run_url(run.info.experiment_id, run.info.run_id))
