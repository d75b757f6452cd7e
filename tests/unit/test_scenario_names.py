"""The checklist leaves the user's things alone: every name a scenario creates has the reserved prefix.

Two guards. A static check of every file in `scenarios/`: each place that
names something on the stack (an MLflow experiment or registered model, an S3
key or URL, a deployment, a GPU namespace) gets a name that provably starts
with `SCENARIO_PREFIX`, followed through module constants, local variables and
the scenario's own helper functions; APIs whose default name is a shared one
(`check_drift`'s and `Watcher`'s `monitoring`, `Retrainer`'s `retraining`, the pipeline's
`pipelines`, the reference model's `fraud-detector`) must be given one. And
the runtime guard: `ctx.serving` deploys only prefixed names and
`remove_deployments` removes only what the scenario deployed. The integration
test (tests/integration/test_scenarios.py) proves the rest on a real stack.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.scenarios import (
    SCENARIO_PREFIX,
    Outcome,
    Scenario,
    ScenarioFailed,
    is_scenario_name,
    run_scenario,
    scenario_name,
)
from sandbox.scenarios.engine import ScenarioContext, ScenarioResult, default_scenarios_dir
from tests.factories import make_endpoints

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")  # sandbox/serving/deployments.py

# --------------------------------------------------------------------------- the static check


@dataclass(frozen=True)
class Sink:
    """An argument that names something the scenario creates or changes."""

    index: int | None  # positional index, or None: keyword only
    keyword: str | None
    what: str
    required: bool = False  # the callee's default would be a shared name


# Calls by the callee's name (a function or a method), checked wherever they appear in a scenario file.
SINKS: dict[str, list[Sink]] = {
    "set_experiment": [Sink(0, "experiment_name", "experiment", True)],
    "create_experiment": [Sink(0, "name", "experiment", True)],
    "register_model": [Sink(1, "name", "registered model", True)],
    "register_reference_model": [
        Sink(1, "name", "registered model", True),
        Sink(None, "experiment", "experiment", True),
    ],
    "pipeline_arguments": [  # the training pipeline's arguments (sandbox.pipelines.training)
        Sink(None, "model_name", "registered model", True),
        Sink(None, "experiment", "experiment", True),
    ],
    "check_drift": [Sink(1, "model_name", "registered model", True), Sink(None, "experiment", "experiment", True)],
    "Retrainer": [Sink(None, "experiment", "experiment", True)],
    "experiment": [Sink(0, "name", "experiment", True)],  # ctx.experiment: get-or-create with the run's tag
    "registered_model": [Sink(0, "name", "registered model", True)],  # ctx.registered_model
    "Watcher": [Sink(None, "experiment", "experiment", True)],  # its drift checks' experiment
    "put_object": [Sink(1, "object_name", "S3 key", True)],
    "fput_object": [Sink(1, "object_name", "S3 key", True)],
    "copy_object": [Sink(1, "object_name", "S3 key", True)],
    "remove_object": [Sink(1, "object_name", "S3 key", True)],
    "upload_file": [Sink(2, "Key", "S3 key", True)],  # boto3: (Filename, Bucket, Key)
    "delete_quota": [Sink(0, "namespace", "namespace", True)],
}
# Keywords that name things whatever the callee (log_model's registered_model_name, RetrainingConfig's deployment, ...).
KEYWORD_SINKS = {
    "registered_model_name": "registered model",
    "experiment_name": "experiment",
    "namespace": "namespace",
    "deployment": "deployment",
    "Key": "S3 key",  # boto3's spelling (put_object, copy_object, delete_object, ...)
}
# MlflowClient's registry writes: the first argument is the model's name.
REGISTRY_WRITE = re.compile(r"^(create|set|delete|update|rename|transition)_(registered_model|model_version)")
SERVING_WRITES = {"deploy", "split", "undeploy", "expect"}  # on ctx.serving (or anything called `serving`)


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _on_serving(call: ast.Call) -> bool:
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    return (isinstance(receiver, ast.Attribute) and receiver.attr == "serving") or (
        isinstance(receiver, ast.Name) and receiver.id == "serving"
    )


def _argument(call: ast.Call, sink: Sink) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg is not None and keyword.arg == sink.keyword:
            return keyword.value
    if sink.index is not None and len(call.args) > sink.index:
        if not any(isinstance(arg, ast.Starred) for arg in call.args[: sink.index + 1]):
            return call.args[sink.index]
    return None


class _Module:
    """One scenario file: its tree, parents, module-level assignments and functions."""

    def __init__(self, source: str, filename: str):
        self.filename = filename
        self.tree = ast.parse(source, filename)
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.functions = {
            node.name: node for node in ast.walk(self.tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }

    def enclosing(self, node: ast.AST) -> list[ast.AST]:
        """The functions around ``node``, innermost first, then the module."""
        scopes = []
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                scopes.append(node)
        return scopes


def _assignments(scope: ast.AST, name: str) -> list[ast.expr]:
    """Values assigned to ``name`` directly in ``scope`` (not in nested functions)."""
    found = []
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _parameters(function: ast.AST) -> list[str]:
    args = function.args
    return [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]


# A verdict on one expression: "ok" (provably prefixed), ("param", function, name) (a helper's
# parameter: its callers are checked), or a problem (a string saying why not).
def _verdict(module: _Module, expr: ast.expr, at: ast.AST, depth: int = 0):
    if depth > 20:
        return "cannot follow the name (too deep)"
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return "ok" if is_scenario_name(expr.value) else f"the name {expr.value!r} lacks {SCENARIO_PREFIX!r}"
    if isinstance(expr, ast.JoinedStr):
        if not expr.values:
            return "an empty name"
        first = expr.values[0]
        if isinstance(first, ast.Constant):
            text = first.value
            if text.startswith(SCENARIO_PREFIX):
                return "ok"
            return f"the name {text + '…'!r} lacks {SCENARIO_PREFIX!r}"
        return _verdict(module, first.value, at, depth + 1)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _verdict(module, expr.left, at, depth + 1)
    if isinstance(expr, ast.Call):
        callee = _callee(expr)
        if callee in ("scenario_name", "unique"):
            return "ok"
        if callee in ("lower", "strip") and isinstance(expr.func, ast.Attribute):
            return _verdict(module, expr.func.value, at, depth + 1)
        return f"cannot tell that {ast.unparse(expr)!r} is prefixed: use scenario_name() or ctx.unique()"
    if isinstance(expr, ast.Name):
        for scope in module.enclosing(at):
            values = _assignments(scope, expr.id)
            if values:
                verdicts = [_verdict(module, value, value, depth + 1) for value in values]
                problems = [v for v in verdicts if v != "ok"]
                return problems[0] if problems else "ok"
            if not isinstance(scope, ast.Module) and expr.id in _parameters(scope):
                return ("param", scope.name, expr.id)
        return f"cannot tell where {expr.id!r} comes from"
    return f"cannot tell that {ast.unparse(expr)!r} is prefixed: use scenario_name() or ctx.unique()"


def _s3_url_key(expr: ast.expr) -> ast.expr | None:
    """The key part of an s3://BUCKET/KEY string or f-string, as an expression; None if not one."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str) and expr.value.startswith("s3://"):
        key = expr.value.removeprefix("s3://").partition("/")[2]
        return ast.Constant(key) if key else None
    if isinstance(expr, ast.JoinedStr) and expr.values and isinstance(expr.values[0], ast.Constant):
        head = expr.values[0].value
        if not head.startswith("s3://"):
            return None
        _bucket, slash, key = head.removeprefix("s3://").partition("/")
        if not slash:
            return None  # s3://{bucket}/...: not this scenario's literal
        rest = expr.values[1:]
        if key:
            return ast.JoinedStr([ast.Constant(key), *rest])
        return ast.JoinedStr(rest) if rest else None
    return None


def name_problems(source: str, filename: str = "<scenario>") -> list[str]:
    """Every place in a scenario file that names something without provably using the prefix."""
    module = _Module(source, filename)
    helper_sinks: dict[str, dict[int | str, str]] = {}  # scenario-local helper → its naming parameters

    def sinks_of(call: ast.Call) -> list[tuple[ast.expr | None, str, bool]]:
        callee = _callee(call)
        found: list[tuple[ast.expr | None, str, bool]] = []
        boto3 = any(keyword.arg == "Key" for keyword in call.keywords)  # minio's names do not apply
        for sink in [] if boto3 else SINKS.get(callee, []):
            found.append((_argument(call, sink), sink.what, sink.required))
        if REGISTRY_WRITE.match(callee):
            found.append((_argument(call, Sink(0, "name", "registered model")), "registered model", True))
        if callee in SERVING_WRITES and _on_serving(call):
            found.append((_argument(call, Sink(0, "name", "deployment")), "deployment", True))
        if callee == "remove_deployments":
            found += [(arg, "deployment", True) for arg in call.args]
        for keyword in call.keywords:
            if keyword.arg in KEYWORD_SINKS and (
                callee not in SINKS or keyword.arg not in {s.keyword for s in SINKS[callee]}
            ):
                found.append((keyword.value, KEYWORD_SINKS[keyword.arg], True))
        for position, what in helper_sinks.get(callee, {}).items():
            index = position if isinstance(position, int) else None
            keyword = position if isinstance(position, str) else None
            if index is not None:  # a parameter also reachable by keyword
                function = module.functions[callee]
                keyword = _parameters(function)[index]
            found.append((_argument(call, Sink(index, keyword, what)), what, True))
        return [f for f in found if f[0] is not None or f[2]]

    problems: list[str] = []
    changed = True
    while changed:  # follow names through the file's own helpers until nothing new is learnt
        changed = False
        problems = []
        for node in ast.walk(module.tree):
            checks: list[tuple[ast.expr | None, str, bool, ast.AST]] = []
            if isinstance(node, ast.Call):
                checks += [(expr, what, required, node) for expr, what, required in sinks_of(node)]
            key = _s3_url_key(node) if isinstance(node, ast.Constant | ast.JoinedStr) else None
            if key is not None:
                checks.append((key, "S3 key", True, node))
            for expr, what, _required, where in checks:
                line = f"{filename}:{getattr(where, 'lineno', '?')}"
                if expr is None:
                    problems.append(f"{line}: {_callee(where)}() is given no {what} name (its default is shared)")
                    continue
                verdict = _verdict(module, expr, where)
                if verdict == "ok":
                    continue
                if isinstance(verdict, tuple):
                    _, function, parameter = verdict
                    index = _parameters(module.functions[function]).index(parameter)
                    known = helper_sinks.setdefault(function, {})
                    if index not in known:
                        known[index] = what
                        changed = True
                    continue
                problems.append(f"{line}: {what}: {verdict}")
    return sorted(set(problems))


def _scenario_files() -> list[Path]:
    return sorted(p for p in default_scenarios_dir().glob("*.py") if not p.name.startswith("_"))


def test_the_project_has_the_scenario_files_this_checks():
    names = {p.stem for p in _scenario_files()}
    assert {"tracking", "pipelines", "registry", "data_versioning", "ab_testing", "drift", "retraining"} <= names


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: p.stem)
def test_every_name_a_scenario_creates_has_the_prefix(path):
    assert name_problems(path.read_text(), str(path)) == []


BROKEN = """
import mlflow
from sandbox.monitoring.checks import check_drift
from sandbox.monitoring.retraining import Retrainer
from sandbox.pipelines import training
from sandbox.serving.reference_model import register_reference_model

MODEL = "fraud-detector"


def _register(ctx, model_name):
    mlflow.set_experiment("scenario-registry")
    mlflow.sklearn.log_model(object(), name="model", registered_model_name=model_name)


def _upload(ctx, key):
    ctx.endpoints.minio_client().fput_object("data", key, "/tmp/x")
    return f"s3://data/{key}"


def scenario_body(ctx):
    _register(ctx, MODEL)
    _upload(ctx, f"retraining/{ctx.unique('x')}/train.csv")
    run = "scenario-1"
    remote = f"s3://data/{run}"
    ctx.serving.deploy("fraud", f"models:/{MODEL}/1")
    ctx.remove_deployments("fraud")
    ctx.mlflow_client().set_registered_model_alias("fraud-detector", "champion", "1")
    check_drift(ctx.endpoints, "checklist-ok", None)
    Retrainer(ctx.endpoints, ctx.workdir)
    register_reference_model(ctx.endpoints.mlflow_tracking_uri, experiment="checklist-x")
    training.pipeline_arguments(model_name=MODEL, experiment="pipelines")
    "a: b".split(": ")  # str.split is not a deployment
    Watcher(ctx.endpoints, None)
"""


def test_the_check_finds_each_kind_of_unprefixed_name():
    problems = "\n".join(name_problems(BROKEN, "broken.py"))
    expected = [
        "broken.py:12: experiment: the name 'scenario-registry' lacks",  # set_experiment literal
        "broken.py:22: registered model: the name 'fraud-detector' lacks",  # through a helper's parameter
        "broken.py:23: S3 key: the name 'retraining/…' lacks",  # through a helper's parameter, an f-string
        "broken.py:25: S3 key: the name 'scenario-1' lacks",  # s3:// URL built from a local variable
        "broken.py:26: deployment: the name 'fraud' lacks",
        "broken.py:27: deployment: the name 'fraud' lacks",
        "broken.py:28: registered model: the name 'fraud-detector' lacks",
        "broken.py:29: check_drift() is given no experiment name",
        "broken.py:30: Retrainer() is given no experiment name",
        "broken.py:31: register_reference_model() is given no registered model name",
        "broken.py:32: experiment: the name 'pipelines' lacks",
        "broken.py:32: registered model: the name 'fraud-detector' lacks",
        "broken.py:34: Watcher() is given no experiment name",
    ]
    for line in expected:
        assert line in problems, f"not reported: {line}\n--- reported:\n{problems}"
    assert "split" not in problems and ":33:" not in problems


def test_the_same_file_with_prefixed_names_passes():
    fixed = (
        BROKEN.replace('"fraud-detector"', 'scenario_name("fraud-detector")')
        .replace('"scenario-registry"', 'scenario_name("registry")')
        .replace('f"retraining/{ctx.unique', 'f"{ctx.unique')
        .replace('"scenario-1"', 'ctx.unique("one")')
        .replace('"fraud"', '"checklist-fraud"')
        .replace(
            'check_drift(ctx.endpoints, "checklist-ok", None)',
            'check_drift(ctx.endpoints, "checklist-ok", None, experiment=E)',
        )
        .replace("Retrainer(ctx.endpoints, ctx.workdir)", "Retrainer(ctx.endpoints, ctx.workdir, experiment=E)")
        .replace("Watcher(ctx.endpoints, None)", "Watcher(ctx.endpoints, None, experiment=E)")
        .replace("mlflow_tracking_uri, experiment=", "mlflow_tracking_uri, MODEL, experiment=")
        .replace('experiment="pipelines"', "experiment=E")
        .replace("MODEL = ", 'E = "checklist-e"\nMODEL = ')
    )
    assert name_problems(fixed, "fixed.py") == []


# --------------------------------------------------------------------------- the prefix and the runtime guard


def test_names_made_by_the_helpers_have_the_prefix_and_fit_where_they_go():
    assert SCENARIO_PREFIX == "checklist-"
    assert scenario_name("ab-testing", "same") == "checklist-ab-testing-same"
    assert is_scenario_name("checklist-x") and not is_scenario_name("checklist-") and not is_scenario_name("fraud")
    with pytest.raises(ValueError):
        scenario_name()
    context = ScenarioContext(None, lambda: None, Path("."), ScenarioResult("n", "t", "c", Outcome.PASSED))
    namespace = context.unique("gpu-quotas")
    assert namespace.startswith("checklist-gpu-quotas-") and DNS_LABEL.match(namespace) and len(namespace) <= 63
    assert context.unique("checklist-tracking").startswith("checklist-tracking-")  # not prefixed twice


@pytest.mark.parametrize("path", _scenario_files(), ids=lambda p: p.stem)
def test_fixed_deployment_names_in_the_scenarios_are_valid_with_room_for_a_variant(path):
    module = ast.parse(path.read_text())
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _callee(node.value) == "scenario_name":
            value = scenario_name(*(ast.literal_eval(arg) for arg in node.value.args))
            assert DEPLOYMENT_NAME.match(value) and DEPLOYMENT_NAME.match(f"{value}-a"), value


class FakeServing:
    def __init__(self, existing):
        self.records_ = dict.fromkeys(existing, "record")
        self.calls = []

    def records(self):
        return dict(self.records_)

    def get(self, name):
        return self.records_.get(name)

    def deploy(self, name, uri, **kwargs):
        self.calls.append(("deploy", name))
        self.records_[name] = "record"

    def split(self, name, variants, **kwargs):
        self.calls.append(("split", name))
        self.records_[name] = "record"

    def undeploy(self, name):
        self.calls.append(("undeploy", name))
        self.records_.pop(name)
        return [name]

    def inference_endpoints(self):
        return {"passed": "through"}


@pytest.fixture
def endpoints():
    return make_endpoints(capabilities=["serving"])


def _run(func, endpoints, serving_factory):
    """Run ``func`` as a scenario (not registered: the project's registry stays as it is)."""
    return run_scenario(Scenario(func.__name__, "t", "c", (), func, __file__), endpoints, serving_factory)


def test_a_scenario_cannot_deploy_over_a_users_deployment(endpoints):
    backend = FakeServing(["fraud"])

    def deploys_a_users_name(ctx):
        ctx.serving.deploy("fraud", "models:/checklist-x/1")

    result = _run(deploys_a_users_name, endpoints, lambda: backend)
    assert result.outcome == Outcome.FAILED and "'checklist-'" in result.reason and "'fraud'" in result.reason
    assert backend.calls == []


def test_clean_up_removes_only_what_the_scenario_deployed(endpoints):
    backend = FakeServing(["fraud", "checklist-leftover"])

    def deploys_and_cleans_up(ctx):
        ctx.serving.deploy("checklist-mine", "models:/checklist-x/1")
        ctx.serving.split("checklist-split", [])
        assert ctx.serving.inference_endpoints() == {"passed": "through"}
        ctx.remove_deployments("checklist-mine", "checklist-split", "checklist-leftover", "fraud", "checklist-gone")
        with pytest.raises(ScenarioFailed):
            ctx.serving.undeploy("fraud")

    result = _run(deploys_and_cleans_up, endpoints, lambda: backend)
    assert result.outcome == Outcome.PASSED, result.reason
    assert set(backend.records_) == {"fraud", "checklist-leftover"}
    assert ("undeploy", "checklist-mine") in backend.calls and ("undeploy", "checklist-split") in backend.calls


def test_clean_up_after_a_failed_deploy_and_with_nothing_deployed(endpoints):
    class Failing(FakeServing):
        def deploy(self, name, uri, **kwargs):
            self.records_[name] = "half-made"
            raise RuntimeError("the model server did not start")

    backend = Failing(["fraud"])

    def fails_half_way(ctx):
        try:
            ctx.serving.deploy("checklist-mine", "models:/checklist-x/1")
        finally:
            ctx.remove_deployments("checklist-mine")

    result = _run(fails_half_way, endpoints, lambda: backend)
    assert result.outcome == Outcome.FAILED and set(backend.records_) == {"fraud"}

    def never_deploys(ctx):
        ctx.remove_deployments("fraud")

    def no_backend():
        raise AssertionError("clean-up with nothing deployed must not need serving")

    assert _run(never_deploys, endpoints, no_backend).outcome == Outcome.PASSED
