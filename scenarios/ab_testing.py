"""Checklist: A/B testing infrastructure for model comparison.

Two model versions behind the A/B router; Locust traffic for per-variant
latency; labelled traffic whose ground truth goes back through the router's
feedback path; a two-proportion test that names the winner with its
confidence, or says plainly that there is no significant difference. Both
cases are exercised: a strong model against a weak one, and a model against
an identical copy of itself.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from sandbox.loadtest import LoadTestOptions, Target
from sandbox.loadtest import run as run_loadtest
from sandbox.scenarios import ScenarioContext, scenario, scenario_name
from sandbox.serving.abtest import ABVerdict, compare_proportions
from sandbox.serving.specs import DeploymentSpec, VariantSpec

MODEL = scenario_name("ab-testing")
EXPERIMENT = scenario_name("ab-testing")
SPLIT = scenario_name("ab-testing")  # its variants are SPLIT-a and SPLIT-b
SPLIT_SAME = scenario_name("ab-testing", "same")
FEATURES = ["amount", "age", "hour", "merchant_risk", "velocity", "distance"]
LABELLED_REQUESTS = 600


def _truth(rows: np.ndarray) -> np.ndarray:
    return ((rows[:, 0] + rows[:, 3] - 0.5 * rows[:, 4]) > 0).astype(int)


def _register(ctx: ScenarioContext, *, strong: bool) -> str:
    """A strong model sees every feature; a weak one only the least useful two."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    rows = rng.normal(size=(1000, len(FEATURES)))
    frame = pd.DataFrame(rows, columns=FEATURES)
    labels = _truth(rows)
    training = frame if strong else frame.assign(amount=0.0, merchant_risk=0.0, velocity=0.0)
    model = LogisticRegression().fit(training, labels)
    mlflow.set_tracking_uri(ctx.endpoints.mlflow_tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run():
        mlflow.set_tag("variant_kind", "strong" if strong else "weak")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL,
            signature=infer_signature(frame, model.predict(frame)),
            pip_requirements=["scikit-learn"],
        )
    return f"models:/{MODEL}/{info.registered_model_version}"


def _split_evenly(ctx: ScenarioContext, name: str, uri_a: str, uri_b: str) -> None:
    variants = [VariantSpec(label="a", model_uri=uri_a, weight=50), VariantSpec(label="b", model_uri=uri_b, weight=50)]
    ctx.serving.deploy(DeploymentSpec.split(name, variants, sticky_header="x-user-id"))


def _labelled_traffic(ctx: ScenarioContext, split: str, seed: int) -> ABVerdict:
    """Send labelled rows (sticky per user, so routing is reproducible), feed the truth back, test."""
    endpoint = ctx.serving.inference_endpoints()[split]
    rows = np.random.default_rng(seed).normal(size=(LABELLED_REQUESTS, len(FEATURES))).round(4)
    labels = _truth(rows)

    def one(index: int) -> str:
        response = client.post(
            endpoint.v1_predict,
            json={"instances": [dict(zip(FEATURES, rows[index].tolist(), strict=True))]},
            headers={"x-user-id": f"user-{seed}-{index}"},
        )
        ctx.check(response.status_code == 200, f"predict answered {response.status_code}: {response.text[:200]}")
        variant = response.headers.get("x-model-variant")
        ctx.check(variant in ("a", "b"), f"a response named variant {variant!r}")
        feedback = client.post(
            f"{endpoint.url}/feedback",
            json={"request_id": response.headers["x-request-id"], "labels": [int(labels[index])]},
        )
        ctx.check(feedback.status_code == 200, f"feedback answered {feedback.status_code}: {feedback.text[:200]}")
        return variant

    client = httpx.Client(timeout=30, trust_env=False, headers=ctx.endpoints.serving_headers())
    with client, ThreadPoolExecutor(8) as pool:
        variants = list(pool.map(one, range(LABELLED_REQUESTS)))
        stats = client.get(f"{endpoint.url}/feedback").json()["variants"]
    ctx.check(
        stats["a"]["labelled"] + stats["b"]["labelled"] == LABELLED_REQUESTS,
        f"the router scored {stats} for {LABELLED_REQUESTS} labelled requests",
    )
    ctx.check(variants.count("a") == stats["a"]["labelled"], "feedback counts disagree with the variants seen")
    return compare_proportions(
        stats["a"]["correct"], stats["a"]["labelled"], stats["b"]["correct"], stats["b"]["labelled"]
    )


@scenario(
    "ab-testing",
    title="A/B testing for model comparison",
    checklist="A/B testing infrastructure for model comparison",
    needs=["mlflow", "serving"],
    order=50,
    expected_s=22,
)
def ab_testing(ctx: ScenarioContext) -> None:
    with ctx.step("register a strong and a weak model version"):
        strong = _register(ctx, strong=True)
        weak = _register(ctx, strong=False)

    try:
        with ctx.step("split 50/50 strong (a) vs weak (b), sticky on x-user-id"):
            _split_evenly(ctx, SPLIT, strong, weak)
        with ctx.step("Locust traffic through the router: per-variant latency"):
            endpoint = ctx.serving.inference_endpoints()[SPLIT]
            rows = np.random.default_rng(1).normal(size=(64, len(FEATURES))).round(4).tolist()
            for attempt in range(3):  # a busy machine (scenarios side by side) may answer little in 2 s: again
                summary = run_loadtest(
                    Target(endpoint.url, SPLIT, "ab", SPLIT, ctx.endpoints.serving_token),
                    LoadTestOptions(users=4, spawn_rate=4, duration_s=2, rows=rows, user_rate=60),
                    ctx.workdir / f"loadtest-{attempt}",
                )
                per_variant = {name: s for name, s in summary["by_name"].items() if name.startswith("variant ")}
                if len(per_variant) == 2 and min(s["requests"] for s in per_variant.values()) >= 50:
                    break
            ctx.check(set(per_variant) == {"variant a", "variant b"}, f"Locust saw {sorted(summary['by_name'])}")
            ctx.check(summary["failures"] == 0, f"{summary['failures']} Locust requests failed: {summary['errors']}")
        with ctx.step("labelled traffic and feedback: the strong variant must win"):
            different = _labelled_traffic(ctx, SPLIT, seed=2)
            ctx.check(different.winner == "a", f"expected a to win, got: {different.describe()}")
        with ctx.step("the same model on both sides: no significant difference"):
            _split_evenly(ctx, SPLIT_SAME, strong, strong)
            same = _labelled_traffic(ctx, SPLIT_SAME, seed=3)
            ctx.check(same.winner is None, f"identical models were called different: {same.describe()}")
    finally:
        ctx.remove_deployments(SPLIT, SPLIT_SAME)

    latency = ", ".join(
        f"{name} p50 {s['p50']} ms p95 {s['p95']} ms ({s['requests']} req)" for name, s in per_variant.items()
    )
    ctx.evidence(f"strong vs weak: {different.describe()}; {latency}")
    ctx.evidence(f"strong vs itself: {same.describe()}")
