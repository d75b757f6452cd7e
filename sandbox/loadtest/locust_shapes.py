"""Load shapes for Locust: users over time from a profile (`sandbox.loadtest.shapes`), as a `LoadTestShape`.

`sandbox loadtest --shape ...` runs `ProfileShape` through Locust's library API (`sandbox.loadtest.engine`);
`EnvShape` is for plain Locust (`locust -f loadtests/users.py,loadtests/shapes.py`, see that file), the shape
LOADTEST_SHAPE names.

Importing this module imports Locust, which patches the standard library with gevent: only the engine's
process and the locustfiles in `loadtests/` import it (an import-linter contract keeps it so).
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from sandbox.loadtest.shapes import Profile, parse_shape


class ProfileShape(LoadTestShape):
    """Users over time from (seconds, users) points; stops at the profile's end."""

    abstract = True

    def __init__(self, points: list[list[float]] | tuple | None = None) -> None:
        super().__init__()
        if points is not None:
            self.profile = Profile(tuple((float(t), float(level)) for t, level in points))
        # Fast enough to follow a spike within a tick (Locust calls tick() every second).
        self.spawn_rate = max(1.0, self.profile.peak)

    def tick(self):
        run_time = self.get_run_time()
        if run_time >= self.profile.duration_s:
            return None
        return round(self.profile.level_at(run_time)), self.spawn_rate


class EnvShape(ProfileShape):
    """The shape LOADTEST_SHAPE names, for plain `locust -f loadtests/users.py,loadtests/shapes.py`."""

    abstract = False

    def __init__(self) -> None:
        text = os.environ.get("LOADTEST_SHAPE")
        if not text:
            raise SystemExit("set LOADTEST_SHAPE, e.g. LOADTEST_SHAPE='ramp:from=0,to=50,over=60s'")
        self.profile = parse_shape(text)
        super().__init__()
