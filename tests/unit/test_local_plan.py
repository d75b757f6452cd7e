"""The local profile's plan (`sandbox up --dry-run`): `up`'s own actions in their order, each saying what it starts
and where, built from the configuration and the sandbox dir's records, with nothing started or written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.config import load_config
from sandbox.profiles import get_profile
from sandbox.serving.specs import DeploymentSpec, VariantSpec

runner = CliRunner()

BRING_UP = [
    "PostgreSQL",
    "Inference log schema (monitoring database)",
    "S3 object store (SeaweedFS)",
    "MLflow tracking server + model registry",
    "JupyterLab (notebooks)",
    "Model deployments",
    "Supervisor (restarts what crashes)",
]


def _profile(root: Path, **overrides):
    return get_profile(load_config(profile="local", dir=root, **overrides))


def _titles(actions) -> list[str]:
    return [action.title.split(" · ")[0] for action in actions]


def _notes(actions) -> dict[str, str]:
    return dict(action.title.split(" · ", 1) for action in actions)


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    """Every path under ``root`` with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(folder) / name
            found[str(path.relative_to(root))] = (path.stat().st_size, path.stat().st_mtime_ns)
    return found


def test_the_plan_is_ups_actions_in_bring_up_order_then_the_supervisor(tmp_path):
    profile = _profile(tmp_path / "sb")
    planned = profile.plan()
    assert _titles(planned) == BRING_UP
    services = profile._wanted(profile._services(create_secrets=True))  # the very actions `up` runs
    assert _titles(planned)[:-1] == [action.title for action in profile.actions(services)]


def test_every_action_says_what_it_starts_and_where(tmp_path):
    root = tmp_path / "sb"
    notes = _notes(_profile(root, **{"postgres.port": 5999}).plan())
    assert set(notes) == set(BRING_UP)  # none is left without its note
    assert "port 5999 (postgres.port)" in notes["PostgreSQL"]
    assert f"in {root / 'services' / 'postgres'}" in notes["PostgreSQL"]
    assert "a free port chosen at start and 9 more ports of its own" in notes["S3 object store (SeaweedFS)"]
    assert notes["MLflow tracking server + model registry"].startswith("MLflow ")
    assert notes["Model deployments"] == "none recorded"
    assert f"in {root / 'supervisor'}" in notes["Supervisor (restarts what crashes)"]


def test_what_the_configuration_turns_off_is_not_planned_or_says_so(tmp_path):
    planned = _profile(tmp_path / "sb", **{"notebooks.enabled": False, "supervisor.enabled": False}).plan()
    assert "JupyterLab (notebooks)" not in _titles(planned)
    assert _notes(planned)["Supervisor (restarts what crashes)"] == "off (supervisor.enabled: false): not started"


def test_a_sandbox_that_exists_plans_its_kept_ports_and_recorded_deployments_and_is_left_as_it_was(tmp_path):
    root = tmp_path / "sb"
    root.mkdir(mode=0o700)
    (root / "ports.json").write_text(json.dumps({"postgres": 16001, "mlflow": 16002, "deploy.fraud": 17001}))
    fraud = DeploymentSpec.model_validate({"name": "fraud", "kind": "model", "model_uri": "models:/fraud/1"})
    split = DeploymentSpec.model_validate(
        {
            "name": "ab",
            "kind": "split",
            "variants": [
                VariantSpec(label="a", model_uri="models:/fraud/1", weight=50),
                VariantSpec(label="b", model_uri="models:/fraud/2", weight=50),
            ],
        }
    )
    (root / "deployments.json").write_text(json.dumps({d.name: d.model_dump() for d in (fraud, split)}))
    before = _tree(root)
    notes = _notes(_profile(root).plan())
    assert "port 16001 (kept in ports.json)" in notes["PostgreSQL"]
    assert "port 16002 (kept in ports.json)" in notes["MLflow tracking server + model registry"]
    assert notes["Model deployments"] == "restores fraud (model, port 17001), ab (split)"
    assert _tree(root) == before  # no secrets made, no port map rebuilt or saved


def test_a_missing_postgres_is_said_in_the_plan_not_raised(tmp_path):
    profile = _profile(tmp_path / "sb", **{"postgres.bin_dir": tmp_path})
    note = _notes(profile.plan())["PostgreSQL"]
    assert "no PostgreSQL server" in note and "`up` would stop here" in note and "sandbox doctor" in note


def test_up_dry_run_prints_the_plan_exits_0_and_creates_nothing(tmp_path):
    root = tmp_path / "sb"
    result = runner.invoke(app, ["up", "--dir", str(root), "--dry-run", "--no-notebooks", "--mlflow-port", "5998"])
    assert result.exit_code == 0, result.output
    assert "`sandbox up --profile local` would run 6 actions, in order:" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert [line.split(". ", 1)[1].split(" · ")[0] for line in lines] == [t for t in BRING_UP if "Jupyter" not in t]
    assert "port 5998 (mlflow.port)" in result.stdout
    assert "Dry run: nothing was created, started or written." in result.stderr
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_up_starts_what_needs_nothing_at_once_and_the_rest_after_what_it_needs(tmp_path):
    profile = _profile(tmp_path / "sb")
    actions = profile.actions(profile._wanted(profile._services(create_secrets=True)))
    waits = {action.title: action.after for action in actions}
    assert waits == {
        "PostgreSQL": (),
        "S3 object store (SeaweedFS)": (),
        "JupyterLab (notebooks)": (),  # its kernels need the stack's addresses, not its servers
        "Inference log schema (monitoring database)": ("PostgreSQL",),
        "MLflow tracking server + model registry": ("PostgreSQL",),  # its backend store
        "Model deployments": (
            "Inference log schema (monitoring database)",
            "S3 object store (SeaweedFS)",
            "MLflow tracking server + model registry",
        ),
    }


def test_the_dry_run_says_what_each_action_waits_for_by_number(tmp_path):
    result = runner.invoke(app, ["up", "--dir", str(tmp_path / "sb"), "--dry-run", "--no-notebooks"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    after = {
        lines[i].split(". ", 1)[1].split(" · ")[0]: lines[i + 1].strip()
        for i in range(len(lines) - 1)
        if lines[i][:3].strip().rstrip(".").isdigit()
    }
    assert after["PostgreSQL"] == "from the start"
    assert after["Inference log schema (monitoring database)"] == "after 1"
    assert after["MLflow tracking server + model registry"] == "after 1"
    assert after["Model deployments"] == "after 2, 3, 4"
