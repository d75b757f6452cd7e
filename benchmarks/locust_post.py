"""One headless Locust run that POSTs prepared request bodies; prints its figures as one JSON line.

    python -m benchmarks.locust_post SPEC.json

SPEC: {"url": ..., "bodies": [JSON text, ...], "expect": KEY, "users": N, "duration_s": S, "headers": {...}}.
Closed loop, no think time (each user sends its next request when the last
is answered), `FastHttpUser` as `sandbox loadtest` uses; every answer must be
a 200 whose JSON has KEY. Its own process because Locust patches the standard
library with gevent at import time.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


def user_class(spec: dict) -> type:
    parts = urlsplit(spec["url"])
    path, expect = parts.path, spec["expect"]
    bodies = [body.encode() for body in spec["bodies"]]
    headers = {**HEADERS, **spec.get("headers", {})}  # the sandbox server's bearer token, when it has one

    class PostUser(FastHttpUser):
        host = f"{parts.scheme}://{parts.netloc}"
        wait_time = constant(0)

        @task
        def post(self) -> None:
            with self.client.post(
                path, data=random.choice(bodies), headers=headers, name="post", catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    return
                try:
                    ok = expect in response.json()
                except ValueError:
                    ok = False
                if not ok:
                    response.failure(f"answer lacks {expect!r}")

    return PostUser


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    env = Environment(user_classes=[user_class(spec)], events=events)
    runner = env.create_local_runner()
    runner.start(spec["users"], spawn_rate=spec["users"])
    gevent.spawn_later(spec["duration_s"], runner.quit)
    runner.greenlet.join()
    total = env.stats.total
    figures = {
        "requests": total.num_requests,
        "errors": total.num_failures,
        "rps": total.total_rps,
        **{f"p{p}_ms": total.get_response_time_percentile(p / 100) for p in (50, 90, 99)},
        "error_kinds": {str(e.error): e.occurrences for e in env.stats.errors.values()},
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
