import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.errors import ConfigError
from sandbox.loadtest.shapes import Profile, constant, parse_profile, parse_shape


def test_a_profile_is_linear_between_points_and_jumps_at_equal_times():
    profile = parse_profile("0s:10, 30s:100, 30s:50, 1m:50")
    assert profile.duration_s == 60
    assert profile.level_at(15) == pytest.approx(55)
    assert profile.level_at(30) == 50
    assert profile.level_at(45) == 50
    assert profile.expected_requests() == pytest.approx(55 * 30 + 50 * 30)


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("ramp:from=0,to=100,over=60s", [(0, 0), (60, 100)]),
        ("ramp:to=20,over=10s,hold=5s", [(0, 0), (10, 20), (15, 20)]),
        ("step:from=10,by=10,every=10s,steps=3", [(0, 10), (10, 10), (10, 20), (20, 20), (20, 30), (30, 30)]),
        ("spike:base=20,peak=200,at=10s,for=5s", [(0, 20), (10, 20), (10, 200), (15, 200), (15, 20), (25, 20)]),
        ("soak:level=50,for=30m", [(0, 50), (0, 50), (1800, 50)]),
        ("SOAK: level=5, for=1h, rampup=1m", [(0, 0), (60, 5), (3660, 5)]),
    ],
)
def test_named_shapes(text, points):
    assert [tuple(p) for p in parse_shape(text).points] == points


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("wave:to=1", "unknown load shape 'wave'"),
        ("ramp:to=100", "over missing"),
        ("ramp:to=100,over=soon", "not a duration"),
        ("ramp:to=lots,over=5s", "not a number"),
        ("ramp:to=100,over=5s,to=3", "given twice"),
        ("ramp:to=100,over=5s,height=3", "cannot read 'height=3'"),
        ("step:by=1,every=1s,steps=2.5", "whole number"),
        ("spike:base=1,peak=2,at=10s,for=5s,total=12s", "ends before the spike"),
        ("ramp:to=0,over=5s", "every level is 0"),
        ("ramp:to=5000000,over=5s", "out of range"),
    ],
)
def test_bad_shapes_say_what_and_how(text, words):
    with pytest.raises(ConfigError, match=words) as caught:
        parse_shape(text)
    assert caught.value.hint


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10s:5,20s:5", "first point must be at 0s"),
        ("0s:5,20s:5,10s:5", "time goes backwards"),
        ("0s:5", "at least two points"),
        ("0s:5,abc", "cannot read profile point 'abc'"),
        ("0s:5,10x:5", "cannot read profile point"),
        ("0s:-5,10s:5", "cannot read profile point"),
        ("0s:0,10s:0", "every level is 0"),
        ("0s:5,0s:5", "must last"),
    ],
)
def test_bad_profiles_say_what_and_how(text, words):
    with pytest.raises(ConfigError, match=words) as caught:
        parse_profile(text)
    assert caught.value.hint


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_profile_or_a_clear_error(text):
    for parse in (parse_profile, parse_shape):
        try:
            profile = parse(text)
        except ConfigError as exc:
            assert exc.message and exc.hint
        else:
            assert profile.duration_s > 0 and profile.peak > 0


def _points(steps: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """(gap, level) pairs into profile points from 0 s: gaps of 0 make jumps."""
    points, t = [(0.0, float(steps[0][1]))], 0.0
    for gap, level in steps:
        t += gap
        points.append((t, float(level)))
    if points[-1][0] == 0:
        points.append((1.0, points[-1][1]))
    return points


points = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 200)), min_size=1, max_size=6).map(_points)


@settings(max_examples=60)
@given(points)
def test_a_written_profile_reads_back_the_same(raw):
    if all(level == 0 for _, level in raw):
        return
    profile = parse_profile(Profile(tuple(raw)).as_text())
    assert profile.points == tuple(raw)


@settings(max_examples=60, deadline=None)
@given(points, st.integers(1, 4))
def test_arrivals_follow_the_profile_and_split_exactly_across_processes(raw, parts):
    if all(level == 0 for _, level in raw):
        return
    profile = Profile(tuple(raw))
    whole = list(profile.arrivals())
    assert whole == sorted(whole)
    assert all(0 <= t <= profile.duration_s for t in whole)
    assert abs(len(whole) - profile.expected_requests()) <= 1
    split = sorted(t for part in range(parts) for t in profile.arrivals(part, parts))
    assert split == pytest.approx(whole)


def test_a_ramp_sends_more_later_and_a_constant_rate_is_evenly_spaced():
    ramp = list(parse_shape("ramp:from=0,to=100,over=10s").arrivals())
    assert len([t for t in ramp if t < 5]) == pytest.approx(125, abs=1)  # the area under the first half
    assert len([t for t in ramp if t >= 5]) == pytest.approx(375, abs=1)
    steady = list(constant(4, 2).arrivals())
    assert steady == pytest.approx([0.125, 0.375, 0.625, 0.875, 1.125, 1.375, 1.625, 1.875])


def test_a_constant_rate_must_be_positive():
    with pytest.raises(ConfigError, match="must be positive"):
        constant(0, 10)
