from pathlib import Path

import pytest

from sandbox.errors import ConfigError
from sandbox.loadtest import Target, parse_duration, resolve_target
from sandbox.loadtest.slo import compare_baseline, evaluate, parse_slo

SUMMARY = {
    "requests": 1000,
    "failures": 5,
    "rps": 120.0,
    "p90_ms": 60,
    "p50_ms": 20,
    "p95_ms": 80,
    "p99_ms": 150,
    "avg_ms": 25,
    "max_ms": 400,
}


def test_parse_units():
    objectives = {o.metric: o for o in parse_slo("p95<200ms, p99<=1s, error_rate<1%, rps>50")}
    assert objectives["p95"].threshold == 200
    assert objectives["p99"].threshold == 1000
    assert objectives["error_rate"].threshold == 1
    assert objectives["rps"].op == ">"


@pytest.mark.parametrize("spec", ["p97<1ms", "p95<<1", "rps>5ms", "error_rate<2s", "", "p95 less 3"])
def test_bad_slo_terms_name_the_term(spec):
    with pytest.raises(ConfigError):
        parse_slo(spec)


def test_evaluate_passes_and_fails_with_margins():
    verdicts = {v.objective: v for v in evaluate(SUMMARY, parse_slo("p95<100ms,p99<100ms,error_rate<1%,rps>200"))}
    assert verdicts["p95<100ms"].passed
    assert not verdicts["p99<100ms"].passed and verdicts["p99<100ms"].margin.startswith("+50.0ms")
    assert verdicts["error_rate<1%"].passed and verdicts["error_rate<1%"].observed == pytest.approx(0.5)
    assert not verdicts["rps>200"].passed


def test_no_requests_fails_every_gate():
    assert not any(v.passed for v in evaluate({**SUMMARY, "requests": 0}, parse_slo("p95<1000ms")))


def test_baseline_regression_beyond_tolerance_fails():
    slower = {**SUMMARY, "p99_ms": 200, "rps": 100.0}
    verdicts = {v.objective.split()[0]: v for v in compare_baseline(slower, SUMMARY, tolerance=0.10)}
    assert not verdicts["p99"].passed  # +33%
    assert not verdicts["rps"].passed  # -17%
    assert verdicts["p50"].passed
    same = compare_baseline(SUMMARY, SUMMARY, tolerance=0.10)
    assert all(v.passed for v in same)


def test_durations():
    assert parse_duration("30s") == 30
    assert parse_duration("2m") == 120
    assert parse_duration("45") == 45
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_url_targets():
    v1 = resolve_target("http://127.0.0.1:9000/v1/models/fraud:predict", None, None)
    assert v1 == Target("http://127.0.0.1:9000", "fraud", "v1", "http://127.0.0.1:9000/v1/models/fraud:predict")
    v2 = resolve_target("http://127.0.0.1:9000/v2/models/fraud/infer", None, None)
    assert (v2.protocol, v2.model_name) == ("v2", "fraud")
    with pytest.raises(ConfigError, match="cannot tell the model"):
        resolve_target("http://127.0.0.1:9000/", None, None)
    with pytest.raises(ConfigError, match="no deployment named"):
        resolve_target("fraud", None, None)


def _raw(cpu_max: float) -> dict:
    return {
        **SUMMARY,
        "errors": {},
        "by_name": {},
        "timeline": [],
        "generator_saturated": False,
        "generator_cpu_percent": {"max": cpu_max, "mean": cpu_max / 2},
        "duration_s": 10,
    }


def test_finalize_flags_a_saturated_generator_and_sets_the_verdict():
    from sandbox.loadtest import LoadTestOptions, finalize

    target = Target("http://127.0.0.1:1", "m", "v1", "m")
    busy = finalize(_raw(97.0), target, LoadTestOptions(), parse_slo("p95<100ms"), None)
    assert busy["generator_saturated"] and busy["passed"]
    calm = finalize(_raw(40.0), target, LoadTestOptions(), parse_slo("p95<10ms"), None)
    assert not calm["generator_saturated"] and not calm["passed"]
    assert calm["slo"][0]["objective"] == "p95<10ms" and calm["slo"][0]["passed"] is False


def test_report_files_are_written(tmp_path):
    from sandbox.loadtest import LoadTestOptions, finalize
    from sandbox.loadtest.report import write_report

    raw = _raw(20.0)
    raw["timeline"] = [{"t": t, "rps": 100 + t, "p50": 10, "p95": 20, "p99": 30, "users": 5} for t in range(5)]
    summary = finalize(raw, Target("http://127.0.0.1:1", "m", "v1", "m"), LoadTestOptions(), parse_slo("rps>1"), None)
    write_report(tmp_path, summary)
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "summary.html").read_text()
    assert "PASSED" in page and "rps&gt;1" in page and "data:image/png;base64," in page


def test_the_default_report_folder_names_the_model_safely():
    from sandbox.loadtest import default_report_dir

    folder = default_report_dir(Target("http://127.0.0.1:1", "team/fraud model", "v1", "x"))
    assert folder.parent == Path("reports")
    assert folder.name.startswith("loadtest-team_fraud_model-")
