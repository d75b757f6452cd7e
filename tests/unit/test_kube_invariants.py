"""The plan invariants (`sandbox/profiles/kube/invariants.py`): every plan keeps them, and each catches a plan
that breaks it. Plans are built offline (no tool is called); a broken plan is the real one with one change."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sandbox.config import KubeTimeouts, load_config
from sandbox.errors import ExitCode
from sandbox.profiles import get_profile
from sandbox.profiles.kube import actions, invariants
from sandbox.profiles.kube.actions import Effects, KubeAction
from sandbox.profiles.kube.manifests import spec as m

REPO = Path(__file__).resolve().parents[2]


def plan(tmp_path, profile: str = "kind", timeouts: dict[str, int] | None = None, **overrides) -> list[KubeAction]:
    extra = {"cluster.context": "kind-test", "cluster.install_operators": True} if profile == "cluster" else {}
    config_file = None
    if timeouts:
        config_file = tmp_path / "sandbox.yaml"
        config_file.write_text(yaml.safe_dump({"kube": {"timeouts": timeouts}}))
    settings = {"gpu.real_gpus": "off", **extra, **overrides}
    return get_profile(load_config(config_file, profile=profile, dir=tmp_path / "sb", **settings)).plan()


def settings(tmp_path) -> KubeTimeouts:
    return load_config(dir=tmp_path / "sb").kube.timeouts


def replaced(actions_: list[KubeAction], index: int, **changes) -> list[KubeAction]:
    out = list(actions_)
    out[index] = dataclasses.replace(out[index], **changes)
    return out


def index_of(actions_: list[KubeAction], title: str) -> int:
    return next(i for i, a in enumerate(actions_) if a.title.startswith(title))


@pytest.mark.parametrize(
    "profile, overrides",
    [
        ("kind", {}),
        ("kind", {"notebooks.enabled": False}),
        ("kind", {"kind.object_store": "minio"}),
        ("cluster", {}),
        (
            "cluster",
            {"cluster.install_operators": False, "cluster.image": "registry.example/ml-sandbox:1@sha256:" + "a" * 64},
        ),
    ],
)
def test_every_plan_keeps_every_invariant(tmp_path, profile, overrides):
    assert invariants.problems(plan(tmp_path, profile, **overrides), settings(tmp_path)) == []


def test_the_project_image_is_built_and_loaded_before_anything_uses_it(tmp_path):
    steps = plan(tmp_path)
    image = next(a for a in steps if a.title.startswith("Project image")).effects.images[0]
    users = [i for i, a in enumerate(steps) for o in a.effects.applies for c in m.containers(o) if c["image"] == image]
    assert users and index_of(steps, "Project image") < min(users)
    assert index_of(steps, "JupyterLab") > index_of(steps, "Project image")


# --------------------------------------------------------------------------- (a) images


def test_a_catches_an_image_used_before_it_is_built(tmp_path):
    steps = plan(tmp_path)
    built = steps.pop(index_of(steps, "Project image"))
    steps.insert(index_of(steps, "Stack ready"), built)  # where it was before issue 22: after JupyterLab
    found = invariants.images(steps)
    assert found and all(p.startswith("(a)") for p in found)
    assert any("JupyterLab" in p and built.effects.images[0] in p for p in found)


def test_a_catches_an_image_pinned_by_tag_alone(tmp_path):
    steps = plan(tmp_path)
    index = index_of(steps, "PostgreSQL")
    objects = copy.deepcopy(list(steps[index].effects.applies))
    statefulset = next(o for o in objects if o["kind"] == "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/library/postgres:16.15"
    broken = replaced(steps, index, effects=dataclasses.replace(steps[index].effects, applies=tuple(objects)))
    found = invariants.images(broken)
    assert len(found) == 1 and found[0].startswith(f"(a) action {index + 1} (PostgreSQL")
    assert "'docker.io/library/postgres:16.15', which is neither pinned" in found[0]


# --------------------------------------------------------------------------- (b) waits


def test_b_catches_a_wait_for_what_no_earlier_action_makes(tmp_path):
    steps = plan(tmp_path)
    index = index_of(steps, "Helm: kserve ")
    waits = (*steps[index].effects.waits, ("deployment", "kubeflow", "ml-pipeline"))  # KFP comes later
    found = invariants.waits(replaced(steps, index, effects=dataclasses.replace(steps[index].effects, waits=waits)))
    assert found == [f"(b) action {index + 1} ({steps[index].title}) waits for deployment kubeflow/ml-pipeline, "
                     "which no earlier action makes"]  # fmt: skip


# --------------------------------------------------------------------------- (c) upstream objects


def test_c_catches_an_upstream_object_labelled_as_the_sandboxs(tmp_path):
    steps = plan(tmp_path)
    index = index_of(steps, "Kubeflow Pipelines")
    objects = copy.deepcopy(list(steps[index].effects.applies))
    secret = next(o for o in objects if o["kind"] == "Secret")
    secret["metadata"]["labels"] = m.labels(_spec(tmp_path), "kfp")
    found = invariants.upstream_untouched(
        replaced(steps, index, effects=dataclasses.replace(steps[index].effects, applies=tuple(objects)))
    )
    assert len(found) == 1 and "Secret kubeflow/mlpipeline-minio-artifact belongs to an upstream install" in found[0]


def _spec(tmp_path) -> m.StackSpec:
    return m.StackSpec(instance="t1", secrets=m.StackSecrets.generate(), image="ml-sandbox:0.1.0")


# --------------------------------------------------------------------------- (d) network policies


def test_d_catches_a_policy_that_selects_pods_the_sandbox_did_not_make(tmp_path):
    steps = plan(tmp_path)
    index = index_of(steps, "Kubeflow Pipelines")
    policy = {  # the one the plan applied before issue 22
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "ml-pipeline-host",
            "namespace": "kubeflow",
            "labels": m.labels(_spec(tmp_path), "kfp"),
        },
        "spec": {"podSelector": {"matchLabels": {"app": "ml-pipeline"}}, "policyTypes": ["Ingress"]},
    }
    applies = (*steps[index].effects.applies, policy)
    found = invariants.network_policies(
        replaced(steps, index, effects=dataclasses.replace(steps[index].effects, applies=applies))
    )
    assert len(found) == 1 and found[0].startswith("(d)") and "{'app': 'ml-pipeline'}" in found[0]
    own = copy.deepcopy(policy)
    own["spec"]["podSelector"]["matchLabels"] = m.selector(_spec(tmp_path), "mlflow") | {
        "app.kubernetes.io/managed-by": m.MANAGED_BY
    }
    applies = (*steps[index].effects.applies, own)
    assert (
        invariants.network_policies(
            replaced(steps, index, effects=dataclasses.replace(steps[index].effects, applies=applies))
        )
        == []
    )


# --------------------------------------------------------------------------- (e) resources


@pytest.mark.parametrize("missing", [("limits", "cpu"), ("requests", "memory")])
def test_e_catches_a_container_without_explicit_resources(tmp_path, missing):
    steps = plan(tmp_path)
    index = index_of(steps, "MLflow")
    objects = copy.deepcopy(list(steps[index].effects.applies))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    del deployment["spec"]["template"]["spec"]["containers"][0]["resources"][missing[0]][missing[1]]
    found = invariants.resources(
        replaced(steps, index, effects=dataclasses.replace(steps[index].effects, applies=tuple(objects)))
    )
    assert found == [f"(e) action {index + 1} ({steps[index].title}): container mlflow of Deployment "
                     f"ml-sandbox/mlflow sets no {missing[0]}.{missing[1]}"]  # fmt: skip


# --------------------------------------------------------------------------- (f) timeouts


def test_f_every_timeout_of_the_plan_comes_from_the_settings(tmp_path):
    # Distinct odd values no code would hard-code: every timeout the plan prints must be one of them.
    odd = {name: 1000 + 7 * number for number, name in enumerate(KubeTimeouts.model_fields)}
    custom = KubeTimeouts(**odd)
    steps = plan(tmp_path, timeouts=odd)
    assert invariants.timeouts(steps, custom) == []
    printed = {int(s) for a in steps for c in a.commands for s in invariants._TIMEOUT.findall(c)}
    assert printed and printed <= set(odd.values())
    assert invariants.timeouts(steps, KubeTimeouts()) != []  # the defaults are not what was printed


def test_f_catches_a_hard_coded_timeout(tmp_path):
    steps = plan(tmp_path)
    index = index_of(steps, "MLflow")
    commands = (*steps[index].commands, "kubectl wait pods --for=condition=Ready --timeout=123s -n ml-sandbox")
    found = invariants.timeouts(replaced(steps, index, commands=commands), settings(tmp_path))
    assert len(found) == 1 and "a timeout of 123s is not a setting" in found[0]


# --------------------------------------------------------------------------- where they run


def test_up_and_dry_run_refuse_a_plan_that_breaks_an_invariant(tmp_path, monkeypatch):
    from sandbox.cli import app

    original = actions.bring_up

    def broken(*args):
        steps = original(*args)
        built = steps.pop(next(i for i, a in enumerate(steps) if a.title.startswith("Project image")))
        return [*steps, built]

    monkeypatch.setattr(actions, "bring_up", broken)
    for flags in (["--dry-run"], ["--render", str(tmp_path / "out")]):
        result = CliRunner().invoke(app, ["up", "--profile", "kind", "--dir", str(tmp_path / "sb"), *flags])
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "the plan breaks" in result.output and "(a) action" in result.output
    assert not (tmp_path / "sb").exists() and not (tmp_path / "out").exists()


def test_invariant_error_names_every_problem():
    bad = KubeAction(
        "Broken",
        lambda: None,
        effects=Effects(
            applies=(
                {
                    "kind": "Pod",
                    "metadata": {"name": "p", "namespace": "n"},
                    "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                },
            ),
            waits=(("deployment", "n", "d"),),
        ),
        commands=("kubectl wait x --timeout=1s",),
    )
    with pytest.raises(invariants.PlanInvariantError) as info:
        invariants.check_plan([bad], KubeTimeouts())
    rules = [line[:3] for line in info.value.details.splitlines()]
    assert rules == ["(a)", "(b)", "(e)", "(f)"]
