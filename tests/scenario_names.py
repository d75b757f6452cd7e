"""The static name check of the checklist's scenario files: every place a scenario names something on the stack
(an MLflow experiment or registered model, an S3 key or URL, a deployment, a GPU namespace) gets a name that
provably starts with `SCENARIO_PREFIX`, followed through module constants, local variables and the file's own
helper functions. A test helper (tests/unit/test_scenario_names.py tests it; the notebooks' and the checklist
runner's tests use it), kept out of test files so that no test file imports another.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from sandbox.scenarios import SCENARIO_PREFIX, is_scenario_name

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
SERVING_WRITES = {"deploy", "undeploy", "expect"}  # on ctx.serving (or anything called `serving`)
SPEC_BUILDERS = {
    "model",
    "split",
}  # DeploymentSpec.model(NAME, ...), DeploymentSpec.split(NAME, ...): deploy's argument


def callee_of(call: ast.Call) -> str:
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
        callee = callee_of(expr)
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
        callee = callee_of(call)
        found: list[tuple[ast.expr | None, str, bool]] = []
        boto3 = any(keyword.arg == "Key" for keyword in call.keywords)  # minio's names do not apply
        for sink in [] if boto3 else SINKS.get(callee, []):
            found.append((_argument(call, sink), sink.what, sink.required))
        if REGISTRY_WRITE.match(callee):
            found.append((_argument(call, Sink(0, "name", "registered model")), "registered model", True))
        if callee in SERVING_WRITES and _on_serving(call):
            named = _argument(call, Sink(0, "name", "deployment"))
            if isinstance(named, ast.Call) and callee_of(named) in SPEC_BUILDERS:  # the spec names it
                named = _argument(named, Sink(0, "name", "deployment"))
            found.append((named, "deployment", True))
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
                    problems.append(f"{line}: {callee_of(where)}() is given no {what} name (its default is shared)")
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
