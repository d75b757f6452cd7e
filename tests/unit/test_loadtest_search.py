"""The capacity search's and the comparison's logic, driven by step functions that model a server."""

import pytest

from sandbox.errors import ConfigError
from sandbox.loadtest import capacity, compare, slo
from sandbox.loadtest.histogram import Histogram
from sandbox.loadtest.openloop import summarize
from sandbox.loadtest.shapes import constant

SLO = slo.parse_slo("p99<100ms,error_rate<0.1%")


def _server(
    knee: float,
    *,
    flaky_at: set[float] = frozenset(),
    invalid_at: set[float] = frozenset(),
    service_time_p99: float | None = None,
):
    """A target whose p99 is 20 ms below ``knee`` req/s and 2 s above; the verdict as `finalize` gives it.

    A rate in ``flaky_at`` is slow on its second run.
    """
    calls: list[float] = []

    def run_step(rate: float, why: str) -> dict:
        calls.append(rate)
        slow = rate > knee or (rate in flaky_at and calls.count(rate) == 2)
        p99 = 2000.0 if slow else 20.0
        summary = {"requests": int(rate * 10), "failures": 0, "rps": rate, "p50_ms": p99 / 2, "p99_ms": p99}
        summary["valid"] = rate not in invalid_at
        if not summary["valid"] and service_time_p99 is not None:  # as find_capacity marks it
            alone = {**summary, "p99_ms": min(p99, service_time_p99)}
            summary["broke_on_service_time"] = not all(v.passed for v in slo.evaluate(alone, SLO))
        summary["slo"] = slo.as_dicts(slo.evaluate(summary, SLO))
        summary["passed"] = summary["valid"] and all(v["passed"] for v in summary["slo"])
        return summary

    return run_step, calls


def test_the_search_steps_up_bisects_and_confirms_the_rate_that_held():
    run_step, calls = _server(knee=333)
    result = capacity.find(capacity.Search(start_rate=10, max_rate=10_000, precision=0.05), run_step)
    assert calls[:7] == [10, 20, 40, 80, 160, 320, 640]
    held, broke = result["held_rps"], result["broke_rps"]
    assert held <= 333 < broke and (broke - held) <= 0.05 * held
    assert result["confirmed"] and result["stopped"] is None
    confirms = [s for s in result["steps"] if s["why"] == "confirm"]
    assert confirms and all(s["rate"] == held for s in confirms)
    # Then the sustainable rate, 10% below the edge, run as many times as the edge had to hold.
    assert result["sustainable_rps"] == round(held * 0.9, 3)
    assert [s["why"] for s in result["steps"] if s["rate"] == result["sustainable_rps"]] == ["headroom 10%"] * 2
    points = capacity.curve(result["steps"])
    assert [p["rate"] for p in points] == sorted({s["rate"] for s in result["steps"]})


def test_a_rate_that_breaks_on_its_repeat_is_not_reported():
    run_step, _ = _server(knee=333)
    first = capacity.find(capacity.Search(precision=0.05), run_step)
    run_step, _ = _server(knee=333, flaky_at={first["held_rps"]})
    again = capacity.find(capacity.Search(precision=0.05), run_step)
    # Held, then broke: over capacity now and then, so the search settles on a rate that held every time, and
    # the knee's band reaches up to the bisection's upper bracket, where every run broke.
    assert again["always_broke_rps"] == first["broke_rps"] > first["held_rps"]
    assert [s["passed"] for s in again["steps"] if s["rate"] == first["held_rps"]] == [True, False]
    assert again["held_rps"] < first["held_rps"] and again["broke_rps"] == first["held_rps"]
    assert again["confirmed"]
    assert all(s["passed"] for s in again["steps"] if s["rate"] == again["held_rps"])


def test_more_confirm_runs_reject_a_rate_that_breaks_on_its_third_run():
    run_step, calls = _server(knee=333)
    first = capacity.find(capacity.Search(precision=0.05), run_step)
    held = first["held_rps"]

    def third_run_slow(rate: float, why: str) -> dict:
        summary = run_step(rate, why)
        if rate == held and calls.count(rate) == 5:  # 2 in the first search, then its third here
            summary["passed"] = False
        return summary

    again = capacity.find(capacity.Search(precision=0.05, confirm_runs=3), third_run_slow)
    assert again["held_rps"] < held and again["confirmed"]
    assert [s["passed"] for s in again["steps"] if s["rate"] == again["held_rps"]] == [True, True, True]


def _stalls_once(run_step, rates: set[float], *, times: int = 1):
    """``run_step`` with a passing stall: each rate in ``rates`` breaks its first ``times`` runs, whatever the load."""
    seen: list[float] = []

    def stalled(rate: float, why: str) -> dict:
        seen.append(rate)
        summary = run_step(rate, why)
        if rate in rates and seen.count(rate) <= times:
            summary = {**summary, "p99_ms": 2000.0, "passed": False}
        return summary

    return stalled


def test_a_passing_stall_does_not_set_the_upper_bracket_below_the_knee():
    # The first heavy step stalls once (seen here: 3,200 req/s broke at p99 865 ms, then 3,400 held twice).
    # Rerun, it holds twice, so the search goes on up to the knee, and every rate it calls broken broke in
    # most of its runs.
    run_step, _ = _server(knee=333)
    result = capacity.find(capacity.Search(start_rate=10, precision=0.05), _stalls_once(run_step, {160}))
    assert [(s["rate"], s["passed"]) for s in result["steps"] if s["rate"] == 160] == [
        (160, False),
        (160, True),
        (160, True),
    ]
    assert result["held_rps"] <= 333 < result["broke_rps"] <= result["held_rps"] * 1.05
    assert result["always_broke_rps"] == result["broke_rps"]  # a clean knee: no band between the two
    for rate in {s["rate"] for s in result["steps"] if s["rate"] > 333}:
        runs = [s["passed"] for s in result["steps"] if s["rate"] == rate]
        assert runs.count(False) > runs.count(True), (rate, runs)


def test_a_rate_that_breaks_twice_in_three_runs_is_broken():
    run_step, _ = _server(knee=333)
    # 160 breaks, holds, breaks: most runs broke, so the knee is searched for below it.
    seen: list[float] = []

    def second_run_holds(rate: float, why: str) -> dict:
        seen.append(rate)
        summary = run_step(rate, why)
        if rate == 160 and seen.count(rate) != 2:
            summary = {**summary, "p99_ms": 2000.0, "passed": False}
        return summary

    result = capacity.find(capacity.Search(start_rate=10, precision=0.05), second_run_holds)
    assert [s["passed"] for s in result["steps"] if s["rate"] == 160] == [False, True, False]
    assert result["broke_rps"] == 160 and result["held_rps"] < 160 <= result["held_rps"] * 1.05
    assert result["confirmed"]


def test_the_search_goes_down_when_the_start_already_breaks():
    run_step, calls = _server(knee=3)
    result = capacity.find(capacity.Search(start_rate=100, precision=0.1), run_step)
    assert calls[:12] == [100, 100, 50, 50, 25, 25, 12.5, 12.5, 6.25, 6.25, 3.125, 3.125]  # each break run twice
    assert result["held_rps"] <= 3 < result["broke_rps"] and result["confirmed"]


def test_the_top_of_the_search_holding_is_said_so():
    run_step, _ = _server(knee=1e9)
    result = capacity.find(capacity.Search(start_rate=10, max_rate=50), run_step)
    assert result["held_rps"] == 50 and result["broke_rps"] is None and result["reached_max_rate"]


def test_the_sustainable_rate_steps_down_by_the_headroom_until_every_run_holds():
    # The edge held its confirm runs, but 10% below it breaks on its second run: another 10% down holds.
    first = capacity.find(capacity.Search(start_rate=10), _server(knee=333)[0])
    below = round(first["held_rps"] * 0.9, 3)
    run_step, _ = _server(knee=333, flaky_at={below})
    result = capacity.find(capacity.Search(start_rate=10), run_step)
    assert result["held_rps"] == first["held_rps"]  # the edge is unchanged
    assert [s["passed"] for s in result["steps"] if s["rate"] == below] == [True, False]
    assert result["sustainable_rps"] == round(below * 0.9, 3) and result["stopped"] is None


def test_no_headroom_reports_the_edge_and_the_top_of_the_search_needs_none():
    edge = capacity.find(capacity.Search(start_rate=10, headroom=0), _server(knee=333)[0])
    assert edge["sustainable_rps"] == edge["held_rps"] and not any("headroom" in s["why"] for s in edge["steps"])
    top = capacity.find(capacity.Search(start_rate=10, max_rate=50), _server(knee=1000)[0])
    assert top["sustainable_rps"] == top["held_rps"] == 50


def test_a_generator_that_falls_behind_twice_stops_the_search_and_says_why():
    run_step, calls = _server(knee=1000, invalid_at={160})
    result = capacity.find(capacity.Search(start_rate=10), run_step)
    assert calls.count(160) == 2  # retried once
    assert "generator fell behind at 160" in result["stopped"]
    assert result["held_rps"] == 80


def test_a_step_that_breaks_on_service_time_alone_is_broken_even_when_the_generator_fell_behind():
    # A saturated server on the generator's own machine takes its CPU: the sends are late and the step invalid,
    # but the time from each actual send already breaks the SLO, so the target broke it.
    run_step, calls = _server(knee=100, invalid_at={160}, service_time_p99=500.0)
    result = capacity.find(capacity.Search(start_rate=10), run_step)
    assert calls.count(160) == 2  # a break's own rerun, not the late generator's: the verdict is the target's
    assert result["stopped"] is None and result["broke_rps"] <= 160 and 80 <= result["held_rps"] <= 100
    broken = [s for s in result["steps"] if s["rate"] == 160]
    assert all(s["valid"] and not s["passed"] and "service time alone" in s["why"] for s in broken)
    assert not any("generator fell behind" in s["why"].split("(")[0] for s in broken)


def test_a_late_step_whose_service_time_meets_the_slo_still_says_nothing():
    run_step, calls = _server(knee=1000, invalid_at={160}, service_time_p99=20.0)
    result = capacity.find(capacity.Search(start_rate=10), run_step)
    assert calls.count(160) == 2 and "generator fell behind at 160" in result["stopped"]


@pytest.mark.parametrize(
    ("search", "spec", "words"),
    [
        (capacity.Search(), "", "needs an SLO"),
        (capacity.Search(), "rps>5", "rps term"),
        (capacity.Search(start_rate=100, max_rate=10), "p99<1s", "out of order"),
        (capacity.Search(precision=0.9), "p99<1s", "precision"),
        (capacity.Search(confirm_runs=0), "p99<1s", "--confirm-runs"),
        (capacity.Search(headroom=0.8), "p99<1s", "--headroom"),
    ],
)
def test_bad_searches_are_refused(search, spec, words):
    with pytest.raises(ConfigError, match=words):
        search.check(slo.parse_slo(spec) if spec else [])


def test_rounds_alternate_so_neither_target_always_runs_first():
    assert compare.order(3) == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    with pytest.raises(ConfigError, match="at least 2 rounds"):
        compare.order(1)


def test_a_clear_regression_is_called_and_noise_is_not():
    a = {"p50_ms": 10.0, "rps": 100.0}
    rounds = [
        {"a": {**a, "p99_ms": 50.0 + d}, "b": {**a, "p50_ms": 10.0 + d / 10, "p99_ms": 80.0 + d}}
        for d in (-2.0, 1.0, 0.5, -1.0, 1.5)
    ]
    metrics = {m["metric"]: m for m in compare.analyse(rounds, ("old", "new"))}
    p99 = metrics["p99_ms"]
    assert p99["difference"] == pytest.approx(30.0)
    assert p99["ci_low"] == pytest.approx(30.0) and p99["significant"]
    assert p99["verdict"] == "B is higher (worse)"
    p50 = metrics["p50_ms"]
    assert p50["ci_low"] < 0 < p50["ci_high"] and p50["verdict"] == "no clear difference"
    assert not metrics["rps"]["significant"]


def test_the_t_interval_is_students():
    mean, low, high = compare.interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd 1.29, t(0.975, 3) = 3.182: half-width 2.054
    assert (mean, low, high) == pytest.approx((2.5, 0.446, 4.554), abs=1e-3)


def _part(latencies_us: list[int], *, late: int = 0, errors: dict | None = None) -> dict:
    histogram, second = Histogram(), Histogram()
    for value in latencies_us:
        histogram.record(value)
        second.record(value)
    return {
        "scheduled": len(latencies_us) + sum((errors or {}).values()),
        "ok": len(latencies_us),
        "errors": errors or {},
        "late": late,
        "max_lag_ms": 1.0,
        "connections_opened": 2,
        "cpu_s": 0.5,
        "wall_s": 1.0,
        "loop": "uvloop",
        "latency": histogram.to_dict(),
        "service": histogram.to_dict(),
        "seconds": {"0": [len(latencies_us), len(latencies_us), 0, second.to_dict()]},
    }


def test_processes_figures_merge_exactly_and_late_sends_invalidate_the_run():
    fast = _part([1_000] * 99)
    slow = _part([1_000_000] * 2, errors={"HTTP 500": 1}, late=2)
    raw = summarize([fast, slow], constant(102, 1), name="v1", max_late_percent=1.0)
    assert raw["requests"] == 102 and raw["failures"] == 1
    assert raw["p50_ms"] == 1.0 and raw["p99_ms"] == 1000.0 and raw["max_ms"] == 1000.0
    assert raw["late_percent"] == pytest.approx(100 * 2 / 102) and raw["valid"] is False
    assert raw["timeline"][0]["rps"] == 101 and raw["timeline"][0]["p99"] == 1000.0
    assert summarize([fast], constant(99, 1), name="v1", max_late_percent=1.0)["valid"] is True


def _open_summary(**extra) -> dict:
    from sandbox.loadtest import LoadTestOptions, Target, finalize

    profile = constant(100, 1)
    raw = summarize([_part([2_000] * 100)], profile, name="v1 open loop", max_late_percent=1.0)
    options = LoadTestOptions(rate_profile=profile, slo="p99<100ms")
    return {**finalize(raw, Target("http://127.0.0.1:1", "m", "v1", "m"), options, SLO, None), **extra}


def test_open_loop_capacity_and_comparison_reports_render(tmp_path, capsys):
    from sandbox.cli import render_loadtest
    from sandbox.loadtest.report import write_report

    edge = capacity.find(capacity.Search(precision=0.1), _server(knee=333)[0])["held_rps"]
    run_step, _ = _server(knee=333, flaky_at={edge})  # held, then broke: a band between the edge and the knee's top
    found = capacity.find(capacity.Search(precision=0.1), run_step)
    assert found["held_rps"] < found["broke_rps"] < found["always_broke_rps"]
    steps = [{k: v for k, v in s.items() if k != "summary"} for s in found["steps"]]
    capacity_record = {
        **{k: v for k, v in found.items() if k != "steps"},
        "slo": "p99<100ms,error_rate<0.1%",
        "curve": capacity.curve(found["steps"]),
        "steps": steps,
    }
    rounds = [
        {"a": {"p50_ms": 1.0, "p99_ms": 2.0 + r, "rps": 100.0}, "b": {"p50_ms": 1.5, "p99_ms": 9.0 + r, "rps": 99.0}}
        for r in range(3)
    ]
    comparison = {
        "labels": {"a": "old", "b": "new"},
        "rounds": rounds,
        "metrics": compare.analyse(rounds, ("old", "new")),
        "order": ["0a", "0b", "1b", "1a", "2a", "2b"],
    }
    summary = _open_summary(capacity=capacity_record, comparison=comparison)
    assert summary["mode"] == "open" and summary["valid"] and summary["passed"]
    write_report(tmp_path, summary)
    page = (tmp_path / "summary.html").read_text()
    assert "latency from the scheduled send time" in page and "Capacity" in page and "Comparison" in page
    assert f"every run broke from {found['always_broke_rps']:g} req/s" in page
    assert page.count("data:image/png;base64,") == 2
    assert (tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"
    render_loadtest.loadtest(summary, tmp_path)
    printed = capsys.readouterr()
    assert f"{found['held_rps']:g} req/s" in printed.out and "B is higher (worse)" in printed.out
    assert f"{found['broke_rps']:g} req/s broke it (1 of 2 runs)" in printed.out
    assert f"every run broke from {found['always_broke_rps']:g} req/s" in printed.out
    assert "Sent late: 0" in printed.out


def test_an_open_loop_run_with_late_sends_is_invalid_and_fails():
    from sandbox.loadtest import LoadTestOptions, Target, finalize

    profile = constant(100, 1)
    raw = summarize([_part([2_000] * 100, late=5)], profile, name="v1", max_late_percent=1.0)
    summary = finalize(
        raw, Target("http://127.0.0.1:1", "m", "v1", "m"), LoadTestOptions(rate_profile=profile), [], None
    )
    assert summary["valid"] is False and summary["passed"] is False
