"""Runs one headless Locust test through Locust's library API.

    python -m sandbox.loadtest.engine SPEC.json            # the runner (local, or master with workers)
    python -m sandbox.loadtest.engine SPEC.json --worker   # a worker process, for --processes N

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
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from locust import events  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.html import get_html_report  # noqa: E402
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter, stats_history  # noqa: E402

from loadtests.users import ABUser, MLflowServeUser, V1User, V2User  # noqa: E402

USER_CLASSES = {"v1": V1User, "v2": V2User, "ab": ABUser, "mlflow": MLflowServeUser}
REPORTED_PERCENTILES = (0.5, 0.9, 0.95, 0.99)


def _user_class(spec: dict) -> type:
    base = USER_CLASSES[spec["protocol"]]
    return type(
        f"{base.__name__}For{spec['model_name'].title().replace('-', '')}",
        (base,),
        {
            "abstract": False,
            "host": spec["host"],
            "model_name": spec["model_name"],
            "rows": spec["rows"],
            "rows_per_request": spec.get("rows_per_request", 1),
            "columns": spec.get("columns") or [],
        },
    )


def _environment(spec: dict) -> Environment:
    return Environment(user_classes=[_user_class(spec)], events=events, host=spec["host"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_worker(spec: dict, master_port: int) -> None:
    env = _environment(spec)
    runner = env.create_worker_runner("127.0.0.1", master_port)
    runner.greenlet.join()


def run(spec: dict) -> dict:
    report = Path(spec["report_dir"])
    report.mkdir(parents=True, exist_ok=True)
    env = _environment(spec)
    processes = max(1, int(spec.get("processes", 1)))
    workers: list[subprocess.Popen] = []
    cpu_samples: list[float] = []
    generator = psutil.Process()
    generator.cpu_percent()  # the first reading is always 0: prime it

    if processes > 1:
        port = _free_port()
        runner = env.create_master_runner("127.0.0.1", port)
        spec_file = report / "spec.json"
        for _ in range(processes):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sandbox.loadtest.engine", str(spec_file), "--worker", str(port)],
                    stdout=subprocess.DEVNULL,
                    stderr=(report / "workers.log").open("ab"),
                )
            )
        deadline = time.monotonic() + 60
        while len(runner.clients.ready) < processes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(runner.clients.ready)} of {processes} Locust workers connected")
            gevent.sleep(0.1)
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
            workers_cpu = [c.cpu_usage for c in runner.clients.values()] if processes > 1 else []
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
    runner.start(spec["users"], spawn_rate=spec["spawn_rate"])
    gevent.spawn_later(spec["duration_s"], runner.quit)
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
    }
    (report / "raw.json").write_text(json.dumps(raw, indent=2, default=str))
    return raw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec", type=Path)
    parser.add_argument("--worker", type=int, metavar="MASTER_PORT")
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    if args.worker:
        run_worker(spec, args.worker)
    else:
        run(spec)


if __name__ == "__main__":
    main()
