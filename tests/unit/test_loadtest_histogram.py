import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.loadtest.histogram import RELATIVE_ERROR, Histogram, bucket_bounds, bucket_of

values = st.integers(min_value=0, max_value=3_600_000_000)  # up to an hour, in microseconds


@given(values)
def test_every_value_lands_in_a_bucket_that_holds_it_within_a_thousandth(value):
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value <= high
    assert high - low <= max(0, value * RELATIVE_ERROR)


def test_buckets_are_contiguous_and_ordered():
    previous_high = -1
    for index in range(0, bucket_of(10**9) + 1):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1 and high >= low
        previous_high = high


def _exact_percentile(sorted_values: list[int], fraction: float) -> int:
    import math

    return sorted_values[max(1, math.ceil(fraction * len(sorted_values) - 1e-9)) - 1]


@settings(max_examples=60)
@given(st.lists(values, min_size=1, max_size=400), st.sampled_from([0.5, 0.9, 0.99, 0.999, 1.0]))
def test_percentiles_match_the_exact_ones_to_the_bucket_resolution(data, fraction):
    histogram = Histogram()
    for value in data:
        histogram.record(value)
    exact = _exact_percentile(sorted(data), fraction)
    reported = histogram.percentile(fraction)
    assert exact <= reported <= exact + exact * RELATIVE_ERROR + 1


@settings(max_examples=40)
@given(st.lists(st.lists(values, max_size=200), min_size=1, max_size=5))
def test_merging_parts_equals_recording_everything_in_one(parts):
    whole = Histogram()
    pieces = []
    for part in parts:
        piece = Histogram()
        for value in part:
            piece.record(value)
            whole.record(value)
        pieces.append(Histogram.from_dict(piece.to_dict()))  # through JSON's shape, as worker processes ship them
    merged = Histogram.merged(pieces)
    assert merged.counts == whole.counts
    assert (merged.total, merged.sum_us, merged.max_us, merged.min_us) == (
        whole.total,
        whole.sum_us,
        whole.max_us,
        whole.min_us,
    )
    for fraction in (0.5, 0.99, 0.999):
        assert merged.percentile(fraction) == whole.percentile(fraction)


def test_a_merged_p99_is_not_an_average_of_p99s():
    fast, slow = Histogram(), Histogram()
    for _ in range(990):
        fast.record(1_000)  # 1 ms
    for _ in range(10):
        slow.record(1_000_000)  # 1 s
    for _ in range(990):
        slow.record(2_000)
    merged = Histogram.merged([fast, slow])
    assert merged.total == 1990
    assert merged.percentile_ms(0.99) == 2.0  # 10 slow of 1990 is under 1%
    assert merged.percentile_ms(0.999) > 999  # but the top 0.1% is the stall
    assert Histogram().percentile(0.99) == 0


def test_percentiles_are_fine_grained_where_locust_rounds():
    histogram = Histogram()
    rng = random.Random(1)
    for _ in range(10_000):
        histogram.record(int(rng.uniform(150_000, 160_000)))  # 150–160 ms: Locust's buckets are 10 ms wide there
    assert 154.0 < histogram.percentile_ms(0.5) < 156.0
