"""A latency histogram with HdrHistogram's layout: fine resolution, fixed relative error, exact merges.

Values are integer microseconds. Below 2048 µs every microsecond has its own
bucket; above, each power of two is cut into 1024 equal buckets, so a recorded
value is known to within 1/1024 (0.1%) of itself, from 1 µs to hours, in a few
thousand buckets at most. This is HdrHistogram's scheme with 3 significant
digits; it is written out here (50 lines, plain Python) rather than taken from
a package because the load generator records into it per request and the
worker processes ship it as JSON. Counts are kept sparse (bucket index →
count): merging histograms from several processes adds counts bucket by
bucket, so a merged percentile is exactly the percentile of all the values
recorded, to the bucket's resolution, not an average of percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SUB_BUCKETS = 2048  # exact below this many microseconds
HALF = SUB_BUCKETS // 2
RELATIVE_ERROR = 1 / HALF


def bucket_of(value_us: int) -> int:
    if value_us < SUB_BUCKETS:
        return max(0, value_us)
    shift = value_us.bit_length() - 11  # value >> shift lies in [1024, 2047]
    return SUB_BUCKETS + (shift - 1) * HALF + ((value_us >> shift) - HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest microsecond value that land in bucket ``index``."""
    if index < SUB_BUCKETS:
        return index, index
    shift = (index - SUB_BUCKETS) // HALF + 1
    mantissa = HALF + (index - SUB_BUCKETS) % HALF
    low = mantissa << shift
    return low, low + (1 << shift) - 1


class Histogram:
    __slots__ = ("counts", "max_us", "min_us", "sum_us", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum_us = 0
        self.max_us = 0
        self.min_us = 0

    def record(self, value_us: int) -> None:
        value_us = int(value_us)
        index = bucket_of(value_us)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        if self.total == 0 or value_us < self.min_us:
            self.min_us = value_us
        self.total += 1
        self.sum_us += value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def merge(self, other: Histogram) -> Histogram:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        if other.total:
            self.min_us = other.min_us if self.total == 0 else min(self.min_us, other.min_us)
            self.max_us = max(self.max_us, other.max_us)
        self.total += other.total
        self.sum_us += other.sum_us
        return self

    def percentile(self, fraction: float) -> int:
        """The value at ``fraction`` (0.99 for p99), reported as its bucket's highest value; 0 when empty."""
        if self.total == 0:
            return 0
        rank = max(1, math.ceil(fraction * self.total - 1e-9))  # the smallest value with this share at or below it
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_bounds(index)[1], self.max_us)
        return self.max_us

    def percentile_ms(self, fraction: float) -> float:
        return self.percentile(fraction) / 1000

    @property
    def mean_ms(self) -> float:
        return self.sum_us / self.total / 1000 if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "unit": "us",
            "total": self.total,
            "sum": self.sum_us,
            "min": self.min_us,
            "max": self.max_us,
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        histogram = cls()
        histogram.counts = {int(k): int(v) for k, v in data.get("counts", {}).items()}
        histogram.total = int(data.get("total", sum(histogram.counts.values())))
        histogram.sum_us = int(data.get("sum", 0))
        histogram.max_us = int(data.get("max", 0))
        histogram.min_us = int(data.get("min", 0))
        return histogram

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        result = cls()
        for histogram in histograms:
            result.merge(histogram)
        return result
