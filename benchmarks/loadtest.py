"""Load-generator benchmarks: the generator's own cost, coordinated omission, distributed mode, capacity.

    python -m benchmarks.loadtest [--only cost,stall,distributed,capacity,log_capacity] [--rounds 3] [--duration 8]

Each section prints its figures; ratios are measured side by side in the same run, over --rounds
rounds (order alternated), and reported as medians with every round's value beside them.

  cost         requests one core of each generator sends against a trivial endpoint
               (`benchmarks.stub_server`, one process): wrk (1 thread, 50 connections, closed
               loop), the open-loop generator (1 process, offered wrk's measured rate, at most 50
               connections) and Locust (50 users, 1 process). "Per core" is requests answered per
               CPU-second the generator itself used (getrusage of its process); target: the
               open-loop generator at least half of wrk's.
  stall        a stub that stops for 1 s every 2 s: the open-loop p99 (200 req/s, latency from
               the scheduled send) against the closed-loop p99 (4 Locust users), and whether the
               open-loop p99 agrees with the stall within 10%.
  distributed  Locust's distributed mode, a master and 2 `sandbox loadtest-worker` processes on
               loopback, against `--processes 2`, same users and duration: total requests/s.
  capacity     a sandbox with the reference model (RandomForest, 20 trees, batching 32 / 2 ms, as
               the integration tests deploy it): `--find-capacity --slo 'p99<100ms,error_rate<0.1%'
               --confirm-runs 3`, then runs at the rate found and 20% above it, --check-runs (3) of
               each, alternated: met when every repeat meets the SLO and every +20% run breaks it.
  log_capacity the same search on two deployments of that model, one with the inference log and one
               without (--no-inference-log), alternated over --log-rounds (3) each: the median edges
               (the highest rate held) and their ratio; target: with the log at least 0.95x without.

Every server binds 127.0.0.1; every process started here is stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from benchmarks import load_generators
from benchmarks.load_generators import measure, wrk_path
from sandbox.net import free_port

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("cost", "stall", "distributed", "capacity", "log_capacity")
BODY = '{"instances":[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]]}'
SLO = "p99<100ms,error_rate<0.1%"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rounds(values: list[float], fmt: str = "{:.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


@contextmanager
def stub_server(*args: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.stub_server", *args],
        stdout=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        port = int(proc.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/v1/models/stub:predict"
    finally:
        proc.kill()
        proc.wait(10)


def sandbox(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )
    if check and result.returncode not in (0, 6):
        raise RuntimeError(f"sandbox {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


# --------------------------------------------------------------------------- cost


def _open_loop_cost(url: str, rate: float, duration: float, work: Path, loop: str = "uvloop") -> dict:
    """One open-loop process offered ``rate``; its answered req/s and requests per CPU-second it used."""
    from sandbox.loadtest import openloop
    from sandbox.loadtest.shapes import constant

    profile = constant(rate, duration)
    spec = {
        "host": url.split("/v1/")[0],
        "path": "/v1/models/stub:predict",
        "bodies": [BODY],
        "expect": "predictions",
        "profile": [list(p) for p in profile.points],
        "connections": 50,
        "loop": loop,
    }
    parts = openloop.run(spec, work, processes=1)
    raw = openloop.summarize(parts, profile, name="cost", max_late_percent=1.0)
    cpu = raw["generator_cpu_seconds"]
    answered = raw["requests"] - raw["failures"]
    return {
        "rps": answered / duration,
        "per_cpu_s": answered / cpu if cpu else 0.0,
        "cpu_percent": 100 * cpu / duration,
        "late_percent": raw["late_percent"],
        "loop": raw["event_loop"],
    }


def _wrk_cost(url: str, duration: float, work: Path) -> dict:
    """wrk, 1 thread, 50 connections; its CPU time from getrusage of the finished child."""
    work.mkdir(parents=True, exist_ok=True)
    script = work / "post.lua"
    script.write_text(load_generators.wrk_script("/v1/models/stub:predict", [BODY]))
    argv = [wrk_path(), "--threads", "1", "--connections", "50", "--duration", f"{duration:g}s", "--latency"]
    stdout, wall, cpu = load_generators._run(
        [*argv, "--script", str(script), url], timeout=duration + 60, log=work / "wrk.log"
    )
    figures = load_generators.parse_wrk(stdout)
    return {"rps": figures["rps"], "per_cpu_s": figures["requests"] / cpu, "cpu_percent": 100 * cpu / wall}


def cost(args, work: Path) -> dict:
    print("\n## Generator cost: requests per CPU-second of the generator, trivial endpoint (one stub process)")
    if wrk_path() is None:
        print("wrk is not installed (apt-get install -y wrk): no wrk figure to compare with")
    rows: dict[str, list[dict]] = {"wrk": [], "open loop": [], "open loop, asyncio": [], "locust": []}
    with stub_server() as url:
        for r in range(args.rounds):
            wrk_rps = None
            if wrk_path():
                rows["wrk"].append(_wrk_cost(url, args.duration, work / f"wrk{r}"))
                wrk_rps = rows["wrk"][-1]["rps"]
            rate = wrk_rps or 20_000
            rows["open loop"].append(_open_loop_cost(url, rate, args.duration, work / f"open{r}"))
            rows["open loop, asyncio"].append(
                _open_loop_cost(url, rate, args.duration, work / f"aio{r}", loop="asyncio")
            )
            locust = measure(
                "locust",
                url,
                [BODY],
                expect="predictions",
                connections=50,
                duration_s=args.duration,
                threads=1,
                scratch=work / f"locust{r}",
            )
            # Locust's CPU % is over its process's life, start-up included: no per-CPU-second figure for it.
            rows["locust"].append({"rps": locust.rps, "per_cpu_s": None, "cpu_percent": locust.generator_cpu_percent})
    wrk_per_core = _median([x["per_cpu_s"] for x in rows["wrk"]]) if rows["wrk"] else None
    print(f"{'generator':<22}{'req/s (median)':>16}{'CPU % of a core':>17}{'req per CPU-s':>15}{'vs wrk':>8}  rounds")
    result = {}
    for name, values in rows.items():
        if not values:
            continue
        per_values = [x["per_cpu_s"] for x in values if x["per_cpu_s"] is not None]
        per = _median(per_values) if per_values else None
        ratio = per / wrk_per_core if wrk_per_core and per else None
        rps_values = [x["rps"] for x in values]
        result[name] = {"rps": _median(rps_values), "per_cpu_s": per, "vs_wrk": ratio, "rounds": values}
        print(
            f"{name:<22}{result[name]['rps']:>16,.0f}{_median([x['cpu_percent'] for x in values]):>17.0f}"
            f"{(f'{per:,.0f}' if per else '-'):>15}{(f'{ratio:.2f}' if ratio else '-'):>8}"
            f"  req/s: {_rounds(rps_values)}; per CPU-s: {_rounds(per_values) or '-'}"
        )
    late = [x["late_percent"] for x in rows["open loop"]]
    print(f"open loop: late sends per round {_rounds(late, '{:.2f}%')}; offered wrk's measured rate, 50 connections")
    if wrk_per_core:
        met = result["open loop"]["vs_wrk"] >= 0.5
        print(f"target (open loop >= 0.5 x wrk per core): {'met' if met else 'NOT met'}")
    return result


def stall(args, work: Path) -> dict:
    every, length = 2.0, 1.0
    print(f"\n## Coordinated omission: a stub that stops for {length:g} s every {every:g} s")
    # Stalled a third of the time: the requests that arrive during a stall wait from 0 to 1 s, so the
    # true p99 is the top 3% of those, about 0.97 s; a closed loop sends few requests into a stall.
    expected = length * (1 - 0.01 * (every + length) / length)
    opened, closed = [], []
    with stub_server("--stall-every", str(every), "--stall-for", str(length)) as url:
        for r in range(args.rounds):
            for mode in ("open", "closed") if r % 2 == 0 else ("closed", "open"):
                folder = work / f"stall-{mode}{r}"
                load = ["--rate", "200"] if mode == "open" else ["--users", "4"]
                sandbox("loadtest", url, *load, "--duration", f"{args.duration:g}s", "--report", str(folder))
                (opened if mode == "open" else closed).append(_summary(folder)["p99_ms"])
    open_p99, closed_p99 = _median(opened), _median(closed)
    within = abs(open_p99 - length * 1000) <= 0.10 * length * 1000
    print(f"open-loop p99 (200 req/s, from schedule): {open_p99:.0f} ms (rounds {_rounds(opened)})")
    print(f"closed-loop p99 (4 Locust users):         {closed_p99:.0f} ms (rounds {_rounds(closed)})")
    print(f"expected p99 for this stall pattern: {expected * 1000:.0f} ms; the stall: {length * 1000:.0f} ms")
    print(f"open loop agrees with the stall within 10%: {'yes' if within else 'NO'}")
    return {"open_p99_ms": opened, "closed_p99_ms": closed, "within_10_percent": within}


# --------------------------------------------------------------------------- distributed


@contextmanager
def distributed_processes(url: str, *, users: int, duration: float, folder: Path, workers: int = 2, output=None):
    """A master (`sandbox loadtest --master`) and ``workers`` `sandbox loadtest-worker` processes joining it on
    loopback, as a user starts them; the master's output to ``output`` (a pipe, or nowhere). Whatever still runs
    on the way out is killed. The integration test of distributed mode starts them the same way."""
    port = free_port()
    argv = [sys.executable, "-m", "sandbox", "loadtest", url, "--users", str(users), "--duration", f"{duration:g}s"]
    master = subprocess.Popen(
        [*argv, "--master", "--expect-workers", str(workers), "--master-port", str(port), "--report", str(folder)],
        stdout=output if output is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    worker_argv = [sys.executable, "-m", "sandbox", "loadtest-worker", "--master-host", "127.0.0.1"]
    joined = [
        subprocess.Popen(
            [*worker_argv, "--master-port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        for _ in range(workers)
    ]
    try:
        yield master, joined
    finally:
        for proc in (master, *joined):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _distributed_run(url: str, duration: float, folder: Path) -> dict:
    with distributed_processes(url, users=8, duration=duration, folder=folder) as (master, workers):
        master.wait(duration + 120)
        for worker in workers:
            worker.wait(30)
    return _summary(folder)


def distributed(args, work: Path) -> dict:
    print("\n## Locust distributed (a master and 2 workers on loopback) against --processes 2, 8 users")
    master_rps, local_rps = [], []
    with stub_server() as url:
        for r in range(args.rounds):
            for mode in ("master", "local") if r % 2 == 0 else ("local", "master"):
                folder = work / f"dist-{mode}{r}"
                if mode == "master":
                    master_rps.append(_distributed_run(url, args.duration, folder)["rps"])
                else:
                    sandbox(
                        "loadtest",
                        url,
                        "--users",
                        "8",
                        "--duration",
                        f"{args.duration:g}s",
                        "--processes",
                        "2",
                        "--report",
                        str(folder),
                    )
                    local_rps.append(_summary(folder)["rps"])
    ratio = _median(master_rps) / _median(local_rps)
    print(f"--master + 2 workers: {_median(master_rps):,.0f} req/s (rounds {_rounds(master_rps)})")
    print(f"--processes 2:        {_median(local_rps):,.0f} req/s (rounds {_rounds(local_rps)})")
    print(f"ratio {ratio:.3f}: within 10%: {'yes' if abs(ratio - 1) <= 0.10 else 'NO'}")
    return {"master_rps": master_rps, "processes_rps": local_rps, "ratio": ratio}


# --------------------------------------------------------------------------- capacity


def _deploy_reference(sandbox_dir: Path, name: str, *extra: str) -> None:
    sandbox(
        "serve",
        "deploy",
        name,
        "--model",
        "models:/fraud-detector/1",
        "--batch-size",
        "32",
        "--batch-wait-ms",
        "2",
        *extra,
        "--dir",
        str(sandbox_dir),
    )


def _search(sandbox_dir: Path, name: str, folder: Path, args) -> subprocess.CompletedProcess:
    """`sandbox loadtest NAME --find-capacity` against the SLO; its summary is in ``folder``."""
    return sandbox(
        "loadtest",
        name,
        "--find-capacity",
        "--slo",
        SLO,
        "--start-rate",
        "25",
        "--duration",
        f"{args.capacity_step:g}s",
        "--confirm-runs",
        str(args.confirm_runs),
        "--report",
        str(folder),
        "--dir",
        str(sandbox_dir),
    )


def log_capacity(args, work: Path) -> dict:
    """The capacity edge with the inference log on and off: two deployments of the reference model, one logging,
    one not, searched alternately (on, off, off, on, ...) so drift in the machine's load hits both alike."""
    from sandbox.endpoints import Endpoints, log_in_to_mlflow
    from sandbox.serving.reference_model import register_reference_model

    print(f"\n## Capacity edge with the inference log on and off, alternated, against {SLO}")
    sandbox_dir = work / "sandbox-log"
    edges: dict[str, list[float]] = {"log on": [], "log off": []}
    with ExitStack() as stack:
        stack.callback(lambda: sandbox("down", "--purge", "--dir", str(sandbox_dir), check=False))
        sandbox("up", "--dir", str(sandbox_dir), "--no-notebooks")
        endpoints = json.loads(sandbox("status", "--json", "--dir", str(sandbox_dir)).stdout)["endpoints"]
        log_in_to_mlflow(Endpoints(**endpoints).mlflow_auth_env())
        register_reference_model(endpoints["mlflow_tracking_uri"], "fraud-detector", n_estimators=20, seed=0)
        _deploy_reference(sandbox_dir, "fraud")
        _deploy_reference(sandbox_dir, "fraud-nolog", "--no-inference-log")
        deployments = {"log on": "fraud", "log off": "fraud-nolog"}
        for r in range(args.log_rounds):
            for which in ("log on", "log off") if r % 2 == 0 else ("log off", "log on"):
                folder = work / f"log-capacity-{r}-{deployments[which]}"
                _search(sandbox_dir, deployments[which], folder, args)
                found = _summary(folder)["capacity"]
                edge = found["held_rps"] or 0.0
                edges[which].append(edge)
                print(f"round {r + 1}, {which:>7}: held {edge:g} req/s, broke {found['broke_rps']} req/s")
    on, off = _median(edges["log on"]), _median(edges["log off"])
    ratio = on / off if off else 0.0
    print(f"capacity edge, median of {args.log_rounds}: log on {on:g} req/s, log off {off:g} req/s: {ratio:.2f}x")
    print(f"acceptance (log on >= 0.95x log off): {'met' if ratio >= 0.95 else 'NOT met'}")
    return {"edges": edges, "ratio": ratio}


def capacity(args, work: Path) -> dict:
    from sandbox.endpoints import Endpoints, log_in_to_mlflow
    from sandbox.serving.reference_model import register_reference_model

    print(f"\n## Capacity search on the reference model (20 trees, batching 32 / 2 ms) against {SLO}")
    sandbox_dir = work / "sandbox"
    with ExitStack() as stack:
        stack.callback(lambda: sandbox("down", "--purge", "--dir", str(sandbox_dir), check=False))
        sandbox("up", "--dir", str(sandbox_dir))
        endpoints = json.loads(sandbox("status", "--json", "--dir", str(sandbox_dir)).stdout)["endpoints"]
        log_in_to_mlflow(Endpoints(**endpoints).mlflow_auth_env())
        register_reference_model(endpoints["mlflow_tracking_uri"], "fraud-detector", n_estimators=20, seed=0)
        _deploy_reference(sandbox_dir, "fraud")
        step = f"{args.capacity_step:g}s"
        started = time.monotonic()
        search = _search(sandbox_dir, "fraud", work / "capacity", args)
        found = _summary(work / "capacity")["capacity"]
        print(search.stderr.strip()[-4000:])
        held = found["sustainable_rps"]  # what the search reports as the capacity (the edge less the headroom)
        print(
            f"search: {time.monotonic() - started:.0f} s, {len(found['steps'])} steps of {step}; sustainable {held} "
            f"req/s ({found['headroom']:.0%} headroom); edge: held {found['held_rps']} req/s, broke "
            f"{found['broke_rps']} req/s, every run broke from {found['always_broke_rps']} req/s, "
            f"confirmed {found['confirmed']}, stopped: {found['stopped']}"
        )
        if held is None:
            return {"capacity": found}
        checks: dict[str, list[dict]] = {"repeat": [], "+20%": []}
        rates = {"repeat": held, "+20%": round(held * 1.2, 1)}
        for r in range(args.check_runs):  # alternated, so neither check always runs on a fresher machine
            for name in ("repeat", "+20%") if r % 2 == 0 else ("+20%", "repeat"):
                folder = work / f"capacity-{name}{r}"
                sandbox(
                    "loadtest",
                    "fraud",
                    "--rate",
                    f"{rates[name]:g}",
                    "--duration",
                    step,
                    "--slo",
                    SLO,
                    "--report",
                    str(folder),
                    "--dir",
                    str(sandbox_dir),
                )
                s = _summary(folder)
                checks[name].append({"passed": s["passed"], "p99_ms": s["p99_ms"], "valid": s["valid"]})
                print(
                    f"{name:>7} at {rates[name]:g} req/s: p99 {s['p99_ms']:.1f} ms, errors {s['failures']}, "
                    f"late {s['late_percent']:.2f}%: {'meets' if s['passed'] else 'breaks'} the SLO"
                )
        meets = sum(c["passed"] for c in checks["repeat"])
        breaks = sum(not c["passed"] and c["valid"] for c in checks["+20%"])
        print(f"repeat at {held:g} req/s met the SLO in {meets} of {args.check_runs} runs")
        print(f"+20% at {rates['+20%']:g} req/s broke it in {breaks} of {args.check_runs} runs")
        met = meets == breaks == args.check_runs
        print(f"acceptance (every repeat meets, every +20% run breaks): {'met' if met else 'NOT met'}")
        return {"capacity": {k: v for k, v in found.items() if k != "steps"}, "rates": rates, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    parser.add_argument("--capacity-step", type=float, default=5.0, help="seconds per capacity-search step")
    parser.add_argument("--confirm-runs", type=int, default=3, help="capacity search: runs the rate found must hold")
    parser.add_argument("--check-runs", type=int, default=3, help="capacity: runs of the repeat and of +20%% each")
    # Three: one search's edge moves by 10% between runs of the same server here, so a median of two is a mean.
    parser.add_argument("--log-rounds", type=int, default=3, help="log_capacity: searches with the log on, and off")
    parser.add_argument("--results", type=Path, default=Path("reports/bench-loadtest.json"))
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    print(f"{os.cpu_count()} cores; load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="loadtest-bench-"))
    results = {}
    try:
        for name in chosen:
            results[name] = globals()[name](args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nload average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}; figures in {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
