"""Runs one headless Locust test through Locust's library API.

    python -m sandbox.loadtest.engine SPEC.json                  # the runner (local, or master with workers)
    python -m sandbox.loadtest.engine --connect HOST:PORT        # a worker (--processes N, `sandbox loadtest-worker`)

A worker needs nothing but the master's address: once it is ready the master
sends it the run's settings (target, protocol, payload rows) in a custom message,
ahead of the spawn message, and the worker builds the same user class from it.
So `--processes N` (workers started here, on 127.0.0.1) and `--master` (workers
started by hand or as pods, anywhere that reaches the master) are one code path.
A users-over-time profile (`--shape`) runs as Locust's `LoadTestShape` on the
runner or master.

It is a separate process because Locust patches the standard library with
gevent at import time, which must happen before anything else is imported.
It writes Locust's CSV stats and history, Locust's HTML report and `raw.json`
(totals, percentiles, errors, timeline, generator CPU) into the report folder;
`sandbox.loadtest.report` turns those into verdicts.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from locust import constant_throughput, events  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.html import get_html_report  # noqa: E402
from locust.runners import MasterRunner  # noqa: E402
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter, stats_history  # noqa: E402

from sandbox.loadtest.locust_shapes import ProfileShape  # noqa: E402
from sandbox.loadtest.users import JSON_HEADERS, ABUser, MLflowServeUser, V1User, V2User  # noqa: E402
from sandbox.net import free_port  # noqa: E402
from sandbox.wire import SERVING_TOKEN_ENV, bearer_headers  # noqa: E402

USER_CLASSES = {"v1": V1User, "v2": V2User, "ab": ABUser, "mlflow": MLflowServeUser}
REPORTED_PERCENTILES = (0.5, 0.9, 0.95, 0.99)


def _user_class(settings: dict) -> type:
    base = USER_CLASSES[settings["protocol"]]
    return type(
        f"{base.__name__}For{settings['model_name'].title().replace('-', '')}",
        (base,),
        {
            "abstract": False,
            "host": settings["host"],
            "model_name": settings["model_name"],
            "rows": settings["rows"],
            "rows_per_request": settings.get("rows_per_request", 1),
            "columns": settings.get("columns") or [],
            "headers": {**JSON_HEADERS, **bearer_headers(settings.get("token"))},
            **({"wait_time": constant_throughput(settings["user_rate"])} if settings.get("user_rate") else {}),
        },
    )


def _environment(settings: dict) -> Environment:
    shape = ProfileShape(settings["users_profile"]) if settings.get("users_profile") else None
    return Environment(user_classes=[_user_class(settings)], events=events, host=settings["host"], shape_class=shape)


SETTINGS_MESSAGE = "sandbox_settings"


def run_worker(master_host: str, master_port: int) -> None:
    """A Locust worker that learns its user class from the master's settings message."""
    env = Environment(user_classes=[], events=events)
    runner = env.create_worker_runner(master_host, master_port)

    def on_settings(environment, msg, **_kwargs) -> None:
        environment.user_classes = [_user_class(msg.data)]
        environment.host = msg.data["host"]

    runner.register_message(SETTINGS_MESSAGE, on_settings)
    runner.greenlet.join()


def _await_workers(runner: MasterRunner, settings: dict, expected: int, wait_s: float | None) -> None:
    """Wait until ``expected`` workers are ready, handing each its settings as it arrives."""
    briefed: set[str] = set()
    deadline = time.monotonic() + wait_s if wait_s else None
    while True:
        for client_id in [c.id for c in runner.clients.ready] + [c.id for c in runner.clients.running]:
            if client_id not in briefed:
                runner.send_message(SETTINGS_MESSAGE, _worker_settings(settings), client_id)
                briefed.add(client_id)
        if len(runner.clients.ready) >= expected:
            print(f"{len(runner.clients.ready)} worker(s) connected", flush=True)
            return
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError(f"only {len(runner.clients.ready)} of {expected} Locust workers connected")
        gevent.sleep(0.1)


def _worker_settings(settings: dict) -> dict:
    keys = ("host", "model_name", "protocol", "rows", "rows_per_request", "columns", "token")
    return {key: settings.get(key) for key in keys}


def _quit_when_done(runner, env, duration: float, settings: dict) -> None:
    """Quit after ``duration`` s; past it while fewer than ``min_requests`` were answered, up to ``max_duration_s``."""
    started = time.monotonic()
    gevent.sleep(duration)
    wanted = int(settings.get("min_requests") or 0)
    deadline = started + max(duration, float(settings.get("max_duration_s") or duration))
    while env.stats.total.num_requests < wanted and time.monotonic() < deadline:
        gevent.sleep(0.1)
    runner.quit()


def run(settings: dict) -> dict:
    report = Path(settings["report_dir"])
    report.mkdir(parents=True, exist_ok=True)
    env = _environment(settings)
    processes = max(1, int(settings.get("processes", 1)))
    master = settings.get("master")
    workers: list[subprocess.Popen] = []
    cpu_samples: list[float] = []
    generator = psutil.Process()
    generator.cpu_percent()  # the first reading is always 0: prime it

    if master or processes > 1:
        if master:  # workers join from elsewhere: `sandbox loadtest-worker --master-host H`
            bind, port, expected, wait_s = master["bind_host"], master["port"], master["workers"], master.get("wait_s")
        else:
            bind, port, expected, wait_s = "127.0.0.1", free_port(), processes, 60
        runner = env.create_master_runner(bind, port)
        worker_log = (report / "workers.log").open("ab")
        for _ in range(0 if master else processes):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sandbox.loadtest.engine", "--connect", f"127.0.0.1:{port}"],
                    stdout=subprocess.DEVNULL,
                    stderr=worker_log,
                )
            )
        print(f"master listening on {bind}:{port}, waiting for {expected} worker(s)", flush=True)
        _await_workers(runner, settings, expected, wait_s)
    else:
        runner = env.create_local_runner()

    csv_writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(report / "locust"), full_history=True)
    writer = gevent.spawn(csv_writer)
    history = gevent.spawn(stats_history, runner)  # feeds Locust's own HTML report
    timeline: list[dict] = []
    started = time.time()

    def sample_timeline() -> None:
        # Locust's history is every 5 s with p50/p95 only; the chart wants 1 s and p99.
        while True:
            gevent.sleep(1.0)
            total = env.stats.total
            own = generator.cpu_percent()
            # With workers, the load is generated there; their heartbeats carry their CPU use.
            workers_cpu = [c.cpu_usage for c in runner.clients.values()] if isinstance(runner, MasterRunner) else []
            cpu_samples.append(max([own, *workers_cpu]))
            timeline.append(
                {
                    "t": round(time.time() - started, 2),
                    "rps": total.current_rps or 0.0,
                    "users": runner.user_count,
                    "generator_cpu": cpu_samples[-1],
                    **{
                        f"p{int(p * 100)}": total.get_current_response_time_percentile(p) or 0
                        for p in (0.5, 0.95, 0.99)
                    },
                }
            )

    sampler = gevent.spawn(sample_timeline)
    if env.shape_class is not None:
        runner.start_shape()
        duration = env.shape_class.profile.duration_s + 1  # the shape stops the users; then quit
    else:
        runner.start(settings["users"], spawn_rate=settings["spawn_rate"])
        duration = settings["duration_s"]
    gevent.spawn(_quit_when_done, runner, env, duration, settings)
    runner.greenlet.join()
    ended = time.time()
    history.kill()
    sampler.kill()
    writer.kill()
    csv_writer.close_files()
    for worker in workers:
        worker.wait(timeout=30)

    (report / "locust_report.html").write_text(get_html_report(env, show_download_link=False))

    stats = env.stats
    total = stats.total
    errors = Counter()
    for failure in stats.errors.values():
        errors[str(failure.error)] += failure.occurrences
    by_name = {
        entry.name: {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "rps": entry.total_rps,
            **{f"p{int(p * 100)}": entry.get_response_time_percentile(p) for p in REPORTED_PERCENTILES},
        }
        for entry in stats.entries.values()
    }
    raw = {
        "started": started,
        "ended": ended,
        "duration_s": ended - started,
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rps": total.total_rps,
        "avg_ms": total.avg_response_time,
        "max_ms": total.max_response_time,
        **{f"p{int(p * 100)}_ms": total.get_response_time_percentile(p) for p in REPORTED_PERCENTILES},
        "errors": dict(errors),
        "by_name": by_name,
        "timeline": timeline,
        "generator_cpu_percent": {
            "max": max(cpu_samples, default=0.0),
            "mean": sum(cpu_samples) / len(cpu_samples) if cpu_samples else 0.0,
        },
        "generator_saturated": bool(runner.cpu_warning_emitted or getattr(runner, "worker_cpu_warning_emitted", False)),
        "workers": len(runner.clients) if isinstance(runner, MasterRunner) else 0,
        "users_profile": settings.get("users_profile"),
    }
    (report / "raw.json").write_text(json.dumps(raw, indent=2, default=str))
    return raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings", type=Path, nargs="?", help="the run's settings (JSON), as the CLI writes them")
    parser.add_argument("--connect", metavar="HOST:PORT", help="run as a worker of the master there")
    args = parser.parse_args()
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        run_worker(host, int(port))
    else:
        settings = json.loads(args.settings.read_text())
        settings["token"] = os.environ.get(SERVING_TOKEN_ENV) or None  # the runner's, never in the settings file
        run(settings)


if __name__ == "__main__":
    main()
