"""The serving control plane: one planner for every profile.

`Deployments` takes what the user asked for (a `DeploymentSpec`: one model, or an A/B split of several),
validates it, applies the rules between models, splits and their variants, builds a split's child specs, and
hands consistent records to the profile's runtime (`sandbox.serving.runtime`), which only starts, stops and
lists them. Status details and `InferenceEndpoint`s are built here too, so `serve list` reads the same and a
client finds the same URLs on every profile.

The rules (the contract test, tests/unit/test_serving_contract.py, holds every runtime to them):
- a name is a single model, a split, or a split's variant (`NAME-LABEL`, whose `parent` is the split);
- a model may be redeployed; a split may be re-split (its variants replaced, variants it no longer names
  stopped); a variant is changed only through its split, and undeployed with it;
- a split cannot take a model's name and the other way round, nor a variant name that a model already has;
- names the stack's own services use on the profile are refused; so is a model runtime the profile lacks, and a
  GPU count that no node of the inventory holds (placement within quotas is the runtime's: its scheduler's);
- a missing name is a usage error (exit 2), never "needs a running sandbox".
"""

from __future__ import annotations

from sandbox import wire
from sandbox.endpoints import InferenceEndpoint
from sandbox.errors import ConfigError
from sandbox.serving.runtime import ServingRuntime
from sandbox.serving.specs import (
    KSERVE_MLSERVER,
    SANDBOX_RUNTIME,
    DeploymentSpec,
    DeploymentStatus,
    check_registered,
    validate_model_uri,
    validate_name,
    validate_runtime,
    validate_split,
    variant_specs,
)

_LIST_HINT = "see `sandbox serve list`"


class Deployments:
    """A profile's `ServingBackend`: deploy, undeploy, get, statuses and endpoints over one runtime."""

    def __init__(self, runtime: ServingRuntime, *, most_gpus_on_a_node: int | None = None):
        self.runtime = runtime
        # From the inventory (sandbox.yaml's gpu section): a request that no node can hold is refused up front.
        self.most_gpus_on_a_node = most_gpus_on_a_node

    # ---------------------------------------------------------------- changes

    def deploy(self, spec: DeploymentSpec) -> list[str]:
        """Serve ``spec`` (a model, or a split with its variants), replacing what runs under its name; one note
        per record started. Raises ConfigError (exit 2) for a request the rules refuse, before anything runs."""
        verb = "serve split" if spec.kind == "split" else "serve deploy"
        if spec.kind == "model" and spec.runtime not in self.runtime.model_runtimes:
            validate_runtime(spec.runtime, profile=self.runtime.profile)
        self._refuse_if_read_only(spec.name)
        validate_name(spec.name)
        if spec.kind == "split":
            validate_split(spec.name, spec.variants)
        else:
            self._check_model(spec)
        with self.runtime.lock(f"{verb} {spec.name}"):
            records = self.runtime.records()
            if spec.kind == "split":
                return self._split(spec, records)
            return self._model(spec, records)

    def undeploy(self, name: str) -> list[str]:
        """Stop a deployment (a split with its variants) and forget it; the names removed."""
        self._refuse_if_read_only(name, what="undeploy")
        with self.runtime.lock(f"serve undeploy {name}"):
            records = self.runtime.records()
            record = records.get(name)
            if record is None:
                raise ConfigError(f"no deployment named {name!r}", hint=_LIST_HINT)
            if record.parent:
                raise ConfigError(
                    f"{name!r} is a variant of {record.parent!r}",
                    hint=f"undeploy the split: sandbox serve undeploy {record.parent}",
                )
            removed = [name, *(n for n, r in records.items() if r.parent == name)]  # the router before its variants
            self.runtime.stop(removed)
            return removed

    def _refuse_if_read_only(self, name: str, *, what: str = "deploy") -> None:
        hint = self.runtime.read_only
        if hint:
            profile = self.runtime.profile
            raise ConfigError(f"the {profile} profile cannot {what} {name!r}: it deploys nothing", hint=hint)

    def _check_model(self, spec: DeploymentSpec) -> None:
        if not spec.model_uri:
            raise ConfigError(f"{spec.name!r} names no model", hint="give one: --model models:/NAME/VERSION")
        validate_model_uri(spec.model_uri)
        if spec.batch_size < 1 or spec.batch_wait_ms < 0:
            raise ConfigError(
                "batch size must be >= 1 and batch wait >= 0 ms", hint="e.g. --batch-size 32 --batch-wait-ms 5"
            )
        if spec.gpus < 0:
            raise ConfigError("--gpus must be 0 or more", hint="e.g. --gpus 1")
        most = self.most_gpus_on_a_node
        if spec.gpus and most is not None and spec.gpus > most:
            raise ConfigError(
                f"no node has {spec.gpus} GPU(s) (the most on one node: {most})",
                hint="ask for fewer with --gpus, or add a node with more to gpu.nodes in sandbox.yaml",
            )
        self._check_not_reserved(spec.name)

    def _check_not_reserved(self, *names: str) -> None:
        reserved = self.runtime.reserved_names
        for name in names:
            if name in reserved:
                raise ConfigError(
                    f"{name!r} is the name of one of the stack's own services on the {self.runtime.profile} profile",
                    hint=f"choose another name (taken: {', '.join(sorted(reserved))})",
                )

    def _model(self, spec: DeploymentSpec, records: dict[str, DeploymentSpec]) -> list[str]:
        existing = records.get(spec.name)
        if existing is not None and existing.kind == "split":
            raise ConfigError(
                f"{spec.name!r} is an A/B split", hint=f"undeploy it first: sandbox serve undeploy {spec.name}"
            )
        if existing is not None and existing.parent:
            raise ConfigError(
                f"{spec.name!r} is a variant of {existing.parent!r}",
                hint=f"change it through its split: sandbox serve split {existing.parent} --variant ...",
            )
        check_registered(spec.model_uri or "", self.runtime.tracking_uri())
        record = spec.model_copy(update={"kind": "model", "parent": None, "variants": [], "sticky_header": None})
        return self.runtime.start([record], replacing={spec.name} if existing else set())

    def _split(self, spec: DeploymentSpec, records: dict[str, DeploymentSpec]) -> list[str]:
        name = spec.name
        existing = records.get(name)
        if existing is not None and existing.kind != "split":
            what = f"a variant of {existing.parent!r}" if existing.parent else "a single-model deployment"
            raise ConfigError(f"{name!r} is {what}", hint=f"undeploy it first, or choose another name than {name!r}")
        children = variant_specs(
            name,
            spec.variants,
            batch_size=spec.batch_size,
            batch_wait_ms=spec.batch_wait_ms,
            inference_log=spec.inference_log,
            allow_nan=spec.allow_nan,
        )
        self._check_not_reserved(name, *(child.name for child in children))
        for child in children:
            taken = records.get(child.name)
            if taken is not None and taken.parent != name:
                raise ConfigError(
                    f"{child.name!r}, the name of variant {child.name.removeprefix(name + '-')!r} of {name!r}, is "
                    "already a deployment of its own",
                    hint=f"undeploy {child.name!r} first, or give the variant another label",
                )
        for variant in spec.variants:
            check_registered(variant.model_uri, self.runtime.tracking_uri())
        router = DeploymentSpec(name=name, kind="split", variants=spec.variants, sticky_header=spec.sticky_header)
        started = [*children, router]
        notes = self.runtime.start(started, replacing={r.name for r in started if r.name in records})
        dropped = [n for n, r in records.items() if r.parent == name and n not in {c.name for c in children}]
        if dropped:  # variants the new split no longer names
            self.runtime.stop(dropped)
        labels = [f"{child.name}" for child in children] + [f"{name} (router)"]
        return [f"{label}: {note}" for label, note in zip(labels, notes, strict=True)]

    # ---------------------------------------------------------------- reads

    def get(self, name: str) -> DeploymentSpec | None:
        return self.runtime.records().get(name)

    def statuses(self) -> list[DeploymentStatus]:
        """Every deployment with its state, read from what runs; starts nothing."""
        records = self.runtime.records()
        observed = self.runtime.observe(list(records.values()))
        out = []
        for name, record in records.items():
            seen = observed.get(name)
            address = self.runtime.address(record, reach=False)
            out.append(
                DeploymentStatus(
                    name=name,
                    kind=f"variant of {record.parent}" if record.parent else record.kind,
                    state=seen.state if seen else "stopped",
                    instance=seen.instance if seen else None,
                    url=address.url if address else None,
                    model_uri=record.model_uri,
                    detail=status_detail(record, seen.why if seen else ""),
                )
            )
        return out

    def inference_endpoints(self) -> dict[str, InferenceEndpoint]:
        """Each deployment's URLs on 127.0.0.1 (what reaches them from the host is made sure to run)."""
        out = {}
        for name, record in self.runtime.records().items():
            address = self.runtime.address(record, reach=True)
            if address is None:
                continue
            model = address.model_name or name
            out[name] = InferenceEndpoint(
                name=name,
                url=address.url,
                v1_predict=address.url + wire.v1_predict_path(model),
                v2_infer=address.url + wire.v2_infer_path(model),
                kind=record.kind,
                model_uri=record.model_uri,
                variants=[v.label for v in record.variants],
                grpc=address.grpc,
                model_name=address.model_name,
                protocol=address.protocol or ("v2" if record.runtime == KSERVE_MLSERVER else None),
            )
        return out


def status_detail(record: DeploymentSpec, why: str = "") -> str:
    """The `detail` column of `serve list`: a split's variants, or a model's options that differ from the default."""
    if record.kind == "model" and record.model_uri is None:  # served by a platform the sandbox did not start
        return why
    if record.kind == "split":
        detail = ", ".join(f"{v.label}={v.model_uri} ({v.weight:g})" for v in record.variants)
    else:
        parts = [] if record.runtime == SANDBOX_RUNTIME else [f"runtime {record.runtime}"]
        batching = f"batch {record.batch_size}/{record.batch_wait_ms:g}ms" if record.batch_size > 1 else "no batching"
        parts.append(batching)
        parts += [f"{record.gpus} GPU(s)"] if record.gpus else []
        parts += [] if record.inference_log else ["inference log off"]
        parts += ["NaN allowed"] if record.allow_nan else []
        detail = ", ".join(parts)
    return f"{detail}; {why}" if why else detail
