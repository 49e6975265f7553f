"""Run the benchmark: scenarios on every configuration, a capacity search, and the report.

    python -m bench.run                       # default scale, about 19 minutes (make bench)
    python -m bench.run --scale full          # 10,000 readers, longer runs
    python -m bench.run --configs memory --runs 1 --readers 300 --no-search --no-delivery
    python -m bench.run --only-delivery --runs 1   # only the delivery section, about 3.5 minutes
    python -m bench.run --configs '' --no-delivery --articles 50   # capacities: memory, naive, Socket.IO

Results: ``bench/results/<time>.json`` (every run) and a Markdown table appended to
``docs/benchmarks.md`` (medians per configuration). See that file for what each column means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import delivery, layer_traffic, loadgen, peer_seed, servers
from bench.search import bracket
from bench.servers import CONFIGS, Config, Servers

RESULTS = servers.ROOT / "bench" / "results"
REPORT = servers.ROOT / "docs" / "benchmarks.md"

SCALES = {
    # A few minutes in all: shows that every part works and gives rough ratios.
    "small": dict(
        configs="memory,redis-2,uvicorn,naive",
        readers=500, articles=100, hot_share=None, runs=3, ramp=4.0, warmup=2.0, duration=10.0, settle=3.0,
        search_start=100, search_max=6400, search_duration=6.0, bisect=1, idle_probe=0,
    ),
    # The full-scale targets: 10,000 readers on one process, one article holding 20% of them.
    # The naive baseline is compared by its capacity only: 10,000 readers would just bury it.
    "full": dict(
        configs="memory,redis-2,uvicorn",
        readers=10_000, articles=100, hot_share=0.2, runs=3, ramp=45.0, warmup=5.0, duration=60.0, settle=5.0,
        search_start=2500, search_max=80_000, search_duration=20.0, bisect=2, idle_probe=10_000,
    ),
}


# The delivery section (docs/benchmarks.md, "Delivery"), the same at every scale: how soon a
# reader's move shows on another tab, in a quiet room and among the small scale's workload, on
# one process and on two; and how soon an `online` change shows on every process
# (bench/delivery.py). Each scenario: the arguments it overrides (its timeline too), its target.
DELIVERY_CONFIGS = ("memory", "redis-2")
DELIVERY = {
    "quiet": dict(
        title="quiet room: 2 tabs, 1 article, no churn", readers=2, target=("p50", 0.1),
        args=dict(articles=1, tabs=1.0, churn=0.0, hot_share=None, clients=1,
                  ramp=1.0, warmup=2.0, duration=20.0, settle=1.0),
    ),
    "crowd": dict(
        title="200 readers, the usual workload", readers=200, target=("p50", 0.3),
        args=dict(articles=SCALES["small"]["articles"], hot_share=None, churn=None,
                  **{k: SCALES["small"][k] for k in ("ramp", "warmup", "duration", "settle")}),
    ),
}
DELIVERY_ONLINE = dict(title="`online` change, shown on both processes", config="redis-2", target=("p99", 1.0))


# -- one run ------------------------------------------------------------------------------


def zipf_weights(articles: int, hot_share: float | None) -> list[float]:
    """Zipf(1.0) popularity; ``hot_share`` forces the first article's share of readers."""
    weights = [1 / rank for rank in range(1, articles + 1)]
    if hot_share is not None and articles > 1:
        weights[0] = hot_share / (1 - hot_share) * sum(weights[1:])
    return weights


def run_once(config: Config, readers: int, args, db_url: str, pks: list[int], label: str, *,
             ramp: float, duration: float, settle: float, api: bool = True, progress: bool = True) -> dict:
    """Start the configuration's servers, drive ``readers`` readers through the timeline, measure."""
    prefix = f"bench-{os.getpid()}-{label}"
    rooms = [f"article:{pk}" for pk in pks]
    workers = args.clients or max(1, len(args.client_cpus or [1]))
    with Servers(config, db_url, prefix, args.redis_url, args.server_cpus) as group:
        rss_base = group.rss_kib()
        start = time.time() + 2.0  # time for the worker processes to start
        idle_at = start + ramp + 1.5
        load_at = idle_at + 1.0 if progress else idle_at + 1.0e9
        window = (load_at + args.warmup, load_at + args.warmup + duration)
        if not progress:
            window = (idle_at + 0.5, idle_at + 1.0)
        end_at = window[1]
        plans = [
            loadgen.Plan(
                worker=w, workers=workers, readers=readers, urls=group.ws_urls, rooms=rooms,
                weights=zipf_weights(len(rooms), args.hot_share), start=start, ramp=ramp, idle_at=idle_at,
                load_at=load_at, window=window, end_at=end_at, settle=settle, interval=args.interval,
                jitter=args.jitter, tabs=args.tabs, churn=(churn_rate(args, readers) / workers if progress else 0.0),
                observers_per_room=args.observers, cpus=args.client_cpus, seed=args.seed,
                hold=not progress,
            )
            for w in range(workers)
        ]
        context = multiprocessing.get_context("spawn")
        queue, stop = context.Queue(), context.Event()
        processes = [
            context.Process(target=loadgen.worker_main, args=(plan, queue, stop), daemon=True) for plan in plans
        ]
        for process in processes:
            process.start()

        if progress:
            # Idle memory once the ramp is over (all connected, or load_at came first: see ready_late).
            ready, results = wait_ready(queue, len(processes), load_at - 0.5)
            loadgen_sleep(idle_at)
            rss_idle = group.rss_kib()
            loadgen_sleep(window[0])
            cpu_start, layer_start = group.cpu_seconds(), group.layer_counts()
            loadgen_sleep(window[1])
            cpu_end, rss_end, layer_end = group.cpu_seconds(), group.rss_kib(), group.layer_counts()
            api_ms = None
            if api and config.api:
                loadgen_sleep(end_at + min(1.0, settle / 2))
                api_ms = servers.api_latency(group.http_url, args.api_requests)
            loadgen_sleep(end_at + settle - 0.2)
            run_errors = group.errors_logged()  # what the clients' closing adds is teardown, reported apart
            deadline = end_at + settle + 120
        else:
            # Idle probe: everyone connected and joined, nobody sending; then memory and the count's cost.
            ready, results = wait_ready(queue, len(processes), time.time() + ramp * 3 + 300)
            time.sleep(2.0)
            rss_idle = rss_end = group.rss_kib()
            cpu_start = cpu_end = 0.0
            layer_start = layer_end = None
            api_ms = servers.api_latency(group.http_url, args.api_requests) if api and config.api else None
            run_errors = group.errors_logged()
            stop.set()
            deadline = time.time() + 120
        collect(queue, processes, results, deadline)
        for process in processes:
            process.join(30)
        alive = group.alive()
        teardown_errors = group.errors_logged()[len(run_errors):]
    crashed = [r["crashed"] for r in results if "crashed" in r]
    if crashed:
        raise RuntimeError(f"a load generator process crashed: {crashed}")
    return summarize(
        config, readers, results, label=label, window=window, ramp=ramp,
        server={"cpu": cpu_end - cpu_start, "rss_base": rss_base, "rss_idle": rss_idle, "rss_end": rss_end,
                "alive": alive, "errors": run_errors[:20], "teardown_errors": teardown_errors[:20],
                "api": api_ms, "ready": ready == len(processes),
                "layer_per_s": layer_end and {key: (layer_end[key] - layer_start[key]) / (window[1] - window[0])
                                              for key in layer_end}},
        tick=args.tick, workers=workers, client_cpus=len(args.client_cpus or []) or os.cpu_count(),
    )


def collect(queue, processes, results: list[dict], deadline: float) -> list[dict]:
    """Add every load generator process's final results to ``results`` (those already in)."""
    while len(results) < len(processes):
        try:
            message = queue.get(timeout=5.0)
        except Exception:  # queue.Empty: a worker that died without a word, or just slow
            if time.time() > deadline or not any(p.is_alive() for p in processes):
                raise RuntimeError("load generator processes ended without results") from None
            continue
        if "ready" not in message:
            results.append(message)
    return results


def wait_ready(queue, workers: int, deadline: float) -> tuple[int, list[dict]]:
    """Wait until every worker reports its first readers connected (or the deadline); returns how
    many did, and any final results that arrived meanwhile (a crashed worker's)."""
    ready, results = 0, []
    while ready + len(results) < workers and time.time() < deadline:
        try:
            message = queue.get(timeout=max(0.1, deadline - time.time()))
        except Exception:  # queue.Empty
            break
        if "ready" in message:
            ready += 1
        else:
            results.append(message)
    return ready, results


def loadgen_sleep(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        time.sleep(delay)


def churn_rate(args, readers: int) -> float:
    return args.churn if args.churn is not None else readers * args.churn_fraction


# -- measurements -----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def summarize(config: Config, readers: int, results: list[dict], *, label: str, window: tuple[float, float],
              ramp: float, server: dict, tick: float, workers: int, client_cpus: int) -> dict:
    seconds = window[1] - window[0]
    total = lambda key: sum(r[key] for r in results)  # noqa: E731
    in_window = lambda key: sum(r["window"]["end"][key] - r["window"]["start"][key] for r in results)  # noqa: E731

    # Latency: each observed (reader, position) against the time its progress was sent.
    sends = {}
    for r in results:
        sends.update(r["sends"])
    latencies, matched = [], set()
    for r in results:
        for rid, position, at in r["seen"]:
            sent = sends.get((rid, position))
            if sent is not None:
                latencies.append(at - sent)
                matched.add((rid, position))

    errors = {
        "connect_failures": merge_counts(r["connect_failures"] for r in results),
        "error_frames": merge_counts(r["error_frames"] for r in results),
        "unexpected_closes": merge_counts(r["unexpected_closes"] for r in results),
        "server_log": server["errors"],
        # Errors logged while the clients closed at the end (not counted: the load was over).
        "server_log_teardown": server["teardown_errors"],
        "server_died": not server["alive"],
    }
    error_count = (
        sum(errors["connect_failures"].values()) + sum(errors["error_frames"].values())
        + sum(errors["unexpected_closes"].values()) + logged_errors(errors["server_log"]) + errors["server_died"]
    )
    firsts = [r["ramp_connects"][0] for r in results if r["ramp_connects"][0]]
    lasts = [r["ramp_connects"][1] for r in results if r["ramp_connects"][1]]
    ramp_connects = sum(r["window"]["idle"]["tabs"] for r in results)
    connect_span = (max(lasts) - min(firsts)) if firsts else 0
    connect_ms = [ms for r in results for ms in r["connect_ms"]]
    idle_tabs = ramp_connects
    progress = in_window("progress")
    frames = in_window("frames")
    room_frames = in_window("room_frames")
    generator_cpu = sum(r["window"]["end"]["cpu"] - r["window"]["start"]["cpu"] for r in results)
    return {
        "config": config.name,
        "label": label,
        "readers": readers,
        "workers": workers,
        "connections_idle": idle_tabs,
        "ramp_complete": server["ready"],  # every initial reader connected before the load began
        "connects": total("connects"),
        "connect_rate": round(ramp_connects / connect_span, 1) if connect_span > 0 else None,
        "connect_ms": {"p50": rnd(percentile(connect_ms, 50)), "p99": rnd(percentile(connect_ms, 99)),
                       "max": rnd(max(connect_ms, default=None))},
        "errors": errors,
        "error_count": error_count,
        "arrivals": total("arrivals"),
        "departures": total("departures"),
        "latency_s": {
            "n": len(latencies),
            "p50": rnd(percentile(latencies, 50), 3), "p95": rnd(percentile(latencies, 95), 3),
            "p99": rnd(percentile(latencies, 99), 3), "max": rnd(max(latencies, default=None), 3),
        },
        "visible_fraction": rnd(len(matched) / len(sends), 3) if sends else None,
        "accuracy": accuracy([r["samples"] for r in results]),
        "window_s": seconds,
        "progress_per_s": rnd(progress / seconds, 1),
        "frames_per_s": rnd(frames / seconds, 1),
        # Frames a connection gets per tick: at most one per room per tick, plus `online` (at most 1/s).
        "frames_per_conn_tick": rnd(frames / seconds * tick / idle_tabs, 3) if idle_tabs else None,
        "room_frames_per_conn_tick": rnd(room_frames / seconds * tick / idle_tabs, 3) if idle_tabs else None,
        "server_cpu_s": rnd(server["cpu"], 2),
        "server_cpu_util": rnd(server["cpu"] / seconds, 3),
        "cpu_ms_per_1k_progress": rnd(server["cpu"] * 1000 / (progress / 1000), 1) if progress else None,
        "cpu_ms_per_1k_frames": rnd(server["cpu"] * 1000 / (frames / 1000), 1) if frames else None,
        "rss_kib": {"base": server["rss_base"], "idle": server["rss_idle"], "end": server["rss_end"]},
        "rss_kib_per_conn": rnd((server["rss_idle"] - server["rss_base"]) / idle_tabs, 1) if idle_tabs else None,
        "api_online_ms": server["api"],
        "layer_per_s": server.get("layer_per_s"),
        "generator_cpu_util": rnd(generator_cpu / seconds / max(1, min(workers, client_cpus)), 3),
    }


def accuracy(samples_per_worker: list[list[dict]]) -> dict:
    """Counts shown to observers against the true distinct readers, during the run and after settling.

    Every worker samples at the same moments, so the i-th samples add up to the whole truth."""
    during_online, during_rooms, final = [], [], {}
    for samples in zip(*samples_per_worker, strict=False):
        online = sum(s["online"] for s in samples)
        rooms: dict[str, int] = {}
        for s in samples:
            for room, n in s["rooms"].items():
                rooms[room] = rooms.get(room, 0) + n
        shown = [entry for s in samples for entry in s["shown"]]
        online_errors = [abs(o - online) / max(online, 1) for _, o, _ in shown if o is not None]
        room_errors = [
            abs(c - rooms.get(room, 0)) / max(rooms.get(room, 0), 1) for room, _, c in shown if c is not None
        ]
        if samples[-1].get("final"):
            final = {
                "online_true": online,
                "online_exact": sum(1 for _, o, _ in shown if o == online) / len(shown) if shown else None,
                "rooms_exact": sum(1 for r, _, c in shown if c == rooms.get(r, 0)) / len(shown) if shown else None,
                "max_room_error": max((abs(c - rooms.get(r, 0)) for r, _, c in shown if c is not None), default=None),
            }
        else:
            during_online += online_errors
            during_rooms += room_errors
    return {
        "online_mean_error": rnd(statistics.fmean(during_online), 4) if during_online else None,
        "room_mean_error": rnd(statistics.fmean(during_rooms), 4) if during_rooms else None,
        "final": final,
    }


def logged_errors(lines: list[str]) -> int:
    """Errors in a server log: its ERROR lines, or its tracebacks when nothing was logged as an error."""
    return sum(" ERROR " in line for line in lines) or len(lines)


def merge_counts(counts) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            merged[key] = merged.get(key, 0) + n
    return merged


def rnd(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def passes(result: dict, limit: float) -> bool:
    p99 = result["latency_s"]["p99"]
    return result["error_count"] == 0 and p99 is not None and p99 <= limit and result["latency_s"]["n"] >= 20


# -- the capacity search ------------------------------------------------------------------


def search(config: Config, args, db_url: str, pks: list[int]) -> dict:
    """The largest reader count with p99 <= limit and no errors: doubling, then bisecting."""
    steps = []

    def step(n: int) -> bool:
        ramp = max(2.0, n / args.search_connect_rate)
        try:
            result = run_once(config, n, args, db_url, pks, f"{config.name}-search-{n}",
                              ramp=ramp, duration=args.search_duration, settle=1.0, api=n == args.search_start)
        except Exception as exc:
            log(f"  search {config.name} {n:>6} readers: run failed: {exc!r}")
            steps.append({"readers": n, "ok": False, "failed": repr(exc)[:500], "result": None})
            return False
        ok = passes(result, args.p99_limit)
        steps.append({"readers": n, "ok": ok, "p99": result["latency_s"]["p99"], "errors": result["error_count"],
                      "generator_cpu_util": result["generator_cpu_util"], "result": result})
        log(f"  search {config.name} {n:>6} readers: p99 {result['latency_s']['p99']} s, "
            f"errors {result['error_count']}, {'pass' if ok else 'FAIL'}")
        return ok

    passed, failed = bracket(step, args.search_start, args.search_max, args.bisect)
    return {"config": config.name, "capacity": passed, "first_failure": failed,
            "reached_max": failed is None, "steps": steps}


# -- the delivery section ------------------------------------------------------------------


def run_delivery(args, db_url: str, pks: list[int], notes: list[str], redis_ok: bool) -> dict:
    """The delivery scenarios on memory and redis-2 (``args.runs`` runs each, medians of their
    percentiles), then the `online` trials on redis-2 (once, ``args.online_trials`` changes)."""
    clock = time.monotonic()
    section = {"rows": [], "runs": [], "online": None}
    for key, scenario in DELIVERY.items():
        scenario_args = argparse.Namespace(**{**vars(args), **scenario["args"]})
        for name in DELIVERY_CONFIGS:
            config = CONFIGS[name]
            if config.redis and not redis_ok:
                notes.append(f"Delivery: Redis unreachable, {key} on {name} skipped.")
                continue
            results = []
            for run in range(args.runs):
                label = f"delivery-{key}-{name}-{run}"
                try:
                    result = run_once(config, scenario["readers"], scenario_args, db_url,
                                      pks[:scenario_args.articles], label, ramp=scenario_args.ramp,
                                      duration=scenario_args.duration, settle=scenario_args.settle, api=False)
                except Exception as exc:
                    notes.append(f"Delivery {key} on {name} run {run + 1} failed: {exc!r}"[:500])
                    log("  " + notes[-1])
                    continue
                results.append(result)
                latency = result["latency_s"]
                log(f"  delivery {key} {name} run {run + 1}: latency p50/p95/p99 {latency['p50']}/{latency['p95']}/"
                    f"{latency['p99']} s over {latency['n']}, {result['frames_per_conn_tick']} frames/conn/tick, "
                    f"errors {result['error_count']}")
            section["runs"] += results
            if results:
                section["rows"].append({
                    "scenario": key, "config": name, "readers": scenario["readers"], "runs": len(results),
                    "samples": sum(r["latency_s"]["n"] for r in results),
                    "errors": sum(r["error_count"] for r in results), **medians(results),
                })
    if redis_ok and args.online_trials:
        try:
            online = delivery.run_online(CONFIGS[DELIVERY_ONLINE["config"]], args, db_url, "delivery-online",
                                         args.online_trials)
        except Exception as exc:
            notes.append(f"Delivery: the online trials failed: {exc!r}"[:500])
            log("  " + notes[-1])
        else:
            section["online"] = online
            latency = online["latency_s"]
            log(f"  delivery online {online['config']}: {online['trials']} changes, p50/p95/p99 {latency['p50']}/"
                f"{latency['p95']}/{latency['p99']} s, {len(online['misses'])} missed, "
                f"errors {online['error_count']}")
    elif not redis_ok:
        notes.append("Delivery: Redis unreachable, the online trials skipped.")
    section["elapsed_s"] = round(time.monotonic() - clock)
    return section


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    value = seconds * 1000
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def met(value: float | None, limit: float, errors: int) -> str:
    if errors:
        return f"no ({errors} errors)"
    return "yes" if value is not None and value <= limit else "no"


def delivery_markdown(section: dict, runs: int) -> list[str]:
    online = section.get("online")
    changes = f"; the `online` row: {online['trials']} changes, nearest rank" if online else ""
    lines = [
        "",
        f"Delivery (how soon a move or an `online` change shows on another tab; medians of {runs} "
        + ("runs' " if runs != 1 else "run's ") + f"percentiles{changes}; {section['elapsed_s']} s in all):",
        "",
        "| scenario | config | readers | latency p50 / p95 / p99 ms | frames / conn / tick | target | met? |",
        "|---" * 7 + "|",
    ]
    for row in section["rows"]:
        scenario = DELIVERY[row["scenario"]]
        stat, limit = scenario["target"]
        lines.append(
            f"| {scenario['title']} | {row['config']} | {row['readers']} "
            f"| {ms(row['latency_s.p50'])} / {ms(row['latency_s.p95'])} / {ms(row['latency_s.p99'])} "
            f"| {fmt(row['frames_per_conn_tick'], 2)} | {stat} ≤ {limit * 1000:.0f} ms "
            f"| {met(row[f'latency_s.{stat}'], limit, row['errors'])} |"
        )
    if online:
        stat, limit = DELIVERY_ONLINE["target"]
        latency = online["latency_s"]
        lines.append(
            f"| {DELIVERY_ONLINE['title']} | {online['config']} | 2 + 1 "
            f"| {ms(latency['p50'])} / {ms(latency['p95'])} / {ms(latency['p99'])} "
            f"| {fmt(online['frames_per_conn_tick'], 2)} | {stat} ≤ {limit * 1000:.0f} ms "
            f"| {met(latency[stat], limit, online['error_count'])} |"
        )
    return lines


# -- report -------------------------------------------------------------------------------


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    versions = {}
    for package in ("daphne", "twisted", "channels", "channels-redis", "uvicorn", "wsproto", "websockets", "django"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "versions": versions, "loadavg_at_start": os.getloadavg()}


def median(results: list[dict], path: str) -> float | None:
    values = []
    for result in results:
        value = result
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def medians(results: list[dict]) -> dict:
    paths = [
        "connections_idle", "error_count", "connect_rate", "connect_ms.p99", "latency_s.p50", "latency_s.p95",
        "latency_s.p99", "visible_fraction", "accuracy.online_mean_error", "accuracy.room_mean_error",
        "accuracy.final.online_exact", "accuracy.final.rooms_exact", "cpu_ms_per_1k_progress",
        "cpu_ms_per_1k_frames", "frames_per_s", "frames_per_conn_tick", "room_frames_per_conn_tick",
        "server_cpu_util", "rss_kib_per_conn",
        "api_online_ms.p50_ms", "generator_cpu_util",
    ]
    return {path: median(results, path) for path in paths}


def fmt(value, digits: int = 2, percent: bool = False) -> str:
    if value is None:
        return "–"
    if percent:
        return f"{value * 100:.{digits}f}%"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    m, a = report["machine"], report["args"]
    when = report["started"]
    machine_line = (f"Machine: {m['nproc']} × {m['cpu']}, load average at start {m['loadavg_at_start'][0]:.2f}; "
                    f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".")
    if a["only_delivery"]:
        lines = [
            "",
            f"### {when} — delivery only, scale `{a['scale']}`",
            "",
            machine_line,
            f"Server pinned to CPUs {a['server_cpus']}, load generator to CPUs {a['client_cpus']}; "
            f"progress every {a['interval']} s ±{a['jitter']:.0%}.",
        ]
        lines += delivery_markdown(report["delivery"], a["runs"]) if report.get("delivery") else []
        if report.get("notes"):
            lines += [""] + [f"- {note}" for note in report["notes"]]
        return "\n".join(lines) + "\n"
    lines = [
        "",
        f"### {when} — scale `{a['scale']}`, {a['readers']} readers",
        "",
        machine_line,
        f"Server pinned to CPUs {a['server_cpus']}, load generator ({report['workers']} processes) to CPUs "
        f"{a['client_cpus']}. {a['articles']} articles (Zipf 1.0"
        + (f", hot article forced to {a['hot_share']:.0%}" if a["hot_share"] is not None else "")
        + f"), {a['tabs']} tabs per reader, progress every {a['interval']} s ±{a['jitter']:.0%}, "
        f"churn {report['churn_per_s']:.1f} readers/s, {a['duration']} s measured, {a['runs']} runs (medians).",
        "",
        "| config | conns | errors | connects/s | connect p99 ms | latency p50 / p95 / p99 s | visible "
        "| online err | room err | final exact | CPU ms / 1k progress | CPU ms / 1k frames | frames/s "
        "| frames (room) / conn / tick | server CPU | KiB / conn | API online ms | generator CPU |",
        "|---" * 18 + "|",
    ]
    for name, s in report["summary"].items():
        final = f"{fmt(s['accuracy.final.online_exact'], 0, True)} / {fmt(s['accuracy.final.rooms_exact'], 0, True)}"
        lines.append(
            f"| {name} | {fmt(s['connections_idle'], 0)} | {fmt(s['error_count'], 0)} | {fmt(s['connect_rate'], 0)} "
            f"| {fmt(s['connect_ms.p99'], 0)} "
            f"| {fmt(s['latency_s.p50'])} / {fmt(s['latency_s.p95'])} / {fmt(s['latency_s.p99'])} "
            f"| {fmt(s['visible_fraction'], 0, True)} | {fmt(s['accuracy.online_mean_error'], 1, True)} "
            f"| {fmt(s['accuracy.room_mean_error'], 1, True)} | {final} "
            f"| {fmt(s['cpu_ms_per_1k_progress'], 0)} | {fmt(s['cpu_ms_per_1k_frames'], 0)} "
            f"| {fmt(s['frames_per_s'], 0)} "
            f"| {fmt(s['frames_per_conn_tick'], 2)} ({fmt(s['room_frames_per_conn_tick'], 2)}) "
            f"| {fmt(s['server_cpu_util'], 0, True)} | {fmt(s['rss_kib_per_conn'], 1)} "
            f"| {fmt(s['api_online_ms.p50_ms'], 1)} | {fmt(s['generator_cpu_util'], 0, True)} |"
        )
    if report["searches"]:
        naive = report["searches"].get("naive", {}).get("capacity")
        lines += [
            "",
            f"Capacity (largest readers with p99 ≤ {a['p99_limit']} s and no errors; doubling from "
            f"{a['search_start']}, then {a['bisect']} bisection steps, {a['search_duration']} s each):",
            "",
            "| config | capacity | first failure | vs naive | API online ms at "
            f"{a['search_start']} → {a['readers']} readers |",
            "|---|---|---|---|---|",
        ]
        for name, found in report["searches"].items():
            capacity = found["capacity"]
            shown = f"≥ {capacity}" if found["reached_max"] else fmt(capacity, 0)
            ratio = f"{capacity / naive:.1f}×" if capacity and naive else "–"
            first = found["steps"][0]["result"] if found["steps"] else None
            small = first["api_online_ms"] if first else None
            large = report["summary"].get(name, {}).get("api_online_ms.p50_ms")
            api = (f"{small['p50_ms']:.1f} → {large:.1f} ({large / small['p50_ms']:.1f}×)"
                   if small and large else "–")
            lines.append(f"| {name} | {shown} | {fmt(found['first_failure'], 0)} | {ratio} | {api} |")
    if report.get("peer_seed"):
        lines += peer_seed.markdown(report["peer_seed"], report["searches"].get("memory"), a["p99_limit"])
    if report.get("layer_traffic"):
        lines += layer_traffic.markdown(report["layer_traffic"])
    if report.get("delivery"):
        lines += delivery_markdown(report["delivery"], a["runs"])
    if report.get("notes"):
        lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def log(message: str) -> None:
    print(message, flush=True)


# -- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small",
                        help="defaults for the options below (default: small)")
    parser.add_argument("--configs", help=f"comma-separated, from: {', '.join(CONFIGS)} "
                        "(default: all but uvicorn-wsproto; at full scale not the naive baseline either)")
    parser.add_argument("--runs", type=int, help="runs per configuration (medians are reported)")
    parser.add_argument("--readers", type=int, help="distinct readers (browsers) per run")
    parser.add_argument("--articles", type=int, help="articles (rooms), Zipf(1.0) popularity")
    parser.add_argument("--hot-share", type=float, default=None,
                        help="force the most read article's share of readers, e.g. 0.2")
    parser.add_argument("--tabs", type=float, default=1.2, help="average tabs per reader (1 + a fraction)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a reader's progress frames")
    parser.add_argument("--jitter", type=float, default=0.2, help="± fraction of the interval")
    parser.add_argument("--churn", type=float, default=None, help="readers leaving (and arriving) per second")
    parser.add_argument("--churn-fraction", type=float, default=0.01, help="churn as a fraction of readers per second")
    parser.add_argument("--ramp", type=float, help="seconds over which the readers connect")
    parser.add_argument("--warmup", type=float, help="seconds of load before the measured window")
    parser.add_argument("--duration", type=float, help="seconds measured")
    parser.add_argument("--settle", type=float, help="seconds after the load stops before the final count check")
    parser.add_argument("--observers", type=int, default=4, help="observer tabs per room per load process")
    parser.add_argument("--tick", type=float, default=1.0, help="the server's PRESENCE_TICK (for frames per tick)")
    parser.add_argument("--clients", type=int, default=0, help="load generator processes (default: one per client CPU)")
    parser.add_argument("--server-cpus", default=None, help="CPUs for the servers, e.g. 0 (default: first half)")
    parser.add_argument("--client-cpus", default=None, help="CPUs for the load generator (default: second half)")
    parser.add_argument("--search", default="memory,naive",
                        help="configurations whose capacity is searched ('' for none)")
    parser.add_argument("--no-search", action="store_const", const="", dest="search")
    parser.add_argument("--search-start", type=int)
    parser.add_argument("--search-max", type=int)
    parser.add_argument("--search-duration", type=float)
    parser.add_argument("--search-connect-rate", type=float, default=500.0,
                        help="readers connected per second during a search step's ramp")
    parser.add_argument("--bisect", type=int, help="bisection steps after the first failure")
    parser.add_argument("--p99-limit", type=float, default=1.5, help="seconds")
    parser.add_argument("--peer-seed", action=argparse.BooleanOptionalAction, default=None,
                        help="search the Socket.IO design's capacity too, with its rig (bench/peer_seed.py; "
                        "default: with --search, skipped and said so when Node, npm, the rig or Redis is missing)")
    parser.add_argument("--peer-seed-dir", default=None,
                        help="the rig (default: $SEED_SOCKETIO_DIR, else ../shared/peers/seed-socketio)")
    parser.add_argument("--layer-traffic", action=argparse.BooleanOptionalAction, default=True,
                        help="channel-layer messages per second at 2, 4 and 8 processes on Redis "
                        "(bench/layer_traffic.py)")
    parser.add_argument("--layer-readers", type=int, default=400, help="readers of the layer traffic runs")
    parser.add_argument("--layer-processes", type=lambda text: [int(n) for n in text.split(",")], default=[2, 4, 8],
                        help="process counts of the layer traffic runs, e.g. 2,4,8")
    parser.add_argument("--idle-probe", type=int,
                        help="also connect this many idle readers to measure RSS per connection")
    parser.add_argument("--idle-configs", default="memory,redis-2,uvicorn,uvicorn-wsproto",
                        help="configurations the idle probe runs on (the naive one would take minutes to connect)")
    parser.add_argument("--api-requests", type=int, default=20)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or servers.DEFAULT_REDIS_URL)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-report", action="store_true", help="do not append to docs/benchmarks.md")
    section = parser.add_mutually_exclusive_group()
    section.add_argument("--no-delivery", action="store_true",
                         help="skip the delivery section (quiet room, 200 readers, online trials)")
    section.add_argument("--only-delivery", action="store_true",
                         help="run only the delivery section (no scenarios, idle probe or capacity search)")
    parser.add_argument("--online-trials", type=int, default=50,
                        help="changes of the online count in the delivery section (0: none)")
    args = parser.parse_args(argv)
    for name, value in SCALES[args.scale].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    args.server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else set(cpus[:half])
    args.client_cpus = parse_cpus(args.client_cpus) if args.client_cpus else set(cpus[half:] or cpus)
    return args


def parse_cpus(text: str) -> set[int]:
    cpus = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen.raise_open_files_limit()
    servers.pin(args.client_cpus)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names + [n for n in args.search.split(",") if n] if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configurations: {unknown}; known: {list(CONFIGS)}")
    notes = []
    if args.only_delivery:
        names, args.search, args.idle_probe = [], "", 0
    needs_redis = {"redis-2", "naive"}
    redis_ok = True
    if (not args.no_delivery or args.layer_traffic or any(CONFIGS[n].redis or n in needs_redis for n in names)) \
            and not redis_reachable(args.redis_url):
        redis_ok = False
        skipped = sorted(n for n in names if CONFIGS[n].redis or n in needs_redis)
        if skipped:
            notes.append(f"Redis unreachable at {args.redis_url}: skipped {skipped}.")
        names = [n for n in names if not (CONFIGS[n].redis or n in needs_redis)]
        args.search = ",".join(n for n in args.search.split(",") if n and n not in needs_redis)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    clock = time.monotonic()
    report = {
        "started": started, "machine": machine(),
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "workers": args.clients or len(args.client_cpus), "churn_per_s": churn_rate(args, args.readers),
        "runs": [], "summary": {}, "searches": {}, "delivery": None, "notes": notes,
    }
    log(f"bench: {names}, {args.readers} readers, {args.runs} runs each"
        + ("" if args.no_delivery else ", delivery section") + f"; server CPUs {sorted(args.server_cpus)}, "
        f"load generator CPUs {sorted(args.client_cpus)}")
    with tempfile.TemporaryDirectory(prefix="presence-bench-") as directory:
        # Enough articles for the delivery section's 200 readers too; the scenarios use the first --articles.
        wanted = max(args.articles, 0 if args.no_delivery else DELIVERY["crowd"]["args"]["articles"])
        db_url, all_pks = servers.prepare_database(Path(directory), wanted)
        pks = all_pks[:args.articles]
        for name in names:
            config = CONFIGS[name]
            results = []
            for run in range(args.runs):
                try:
                    result = run_once(config, args.readers, args, db_url, pks, f"{name}-{run}",
                                      ramp=args.ramp, duration=args.duration, settle=args.settle)
                except Exception as exc:  # one broken configuration must not lose the others' results
                    notes.append(f"{name} run {run + 1} failed: {exc!r}"[:500])
                    log("  " + notes[-1])
                    continue
                results.append(result)
                log(f"  {name} run {run + 1}: {result['connections_idle']} conns, errors {result['error_count']}, "
                    f"latency p50/p99 {result['latency_s']['p50']}/{result['latency_s']['p99']} s, "
                    f"server CPU {result['server_cpu_util']:.0%}, generator CPU {result['generator_cpu_util']:.0%}, "
                    f"{result['rss_kib_per_conn']} KiB/conn")
            report["runs"] += results
            if results:
                report["summary"][name] = medians(results)
        if args.idle_probe:
            for name in [n for n in names if n in args.idle_configs.split(",")]:
                result = run_once(CONFIGS[name], args.idle_probe, args, db_url, pks, f"{name}-idle",
                                  ramp=max(5.0, args.idle_probe / 1000), duration=1.0, settle=0.5, progress=False)
                report.setdefault("idle_probes", {})[name] = result
                notes.append(f"Idle probe, {name}: {result['connections_idle']} idle connections, "
                             f"{result['rss_kib_per_conn']} KiB each, {result['error_count']} errors.")
                log("  " + notes[-1])
        if not args.no_delivery:
            report["delivery"] = run_delivery(args, db_url, all_pks, notes, redis_ok)
        for name in [n for n in args.search.split(",") if n]:
            report["searches"][name] = search(CONFIGS[name], args, db_url, pks)
        # By default beside our capacity search (skipped, with why, when the rig cannot run here).
        if not args.only_delivery and (args.peer_seed or (args.peer_seed is None and args.search)):
            report["peer_seed"] = peer_seed.capacity(args)
        if args.layer_traffic and not args.only_delivery:
            if redis_ok:
                report["layer_traffic"] = layer_traffic.run(args, db_url, pks, run_once, log)
            else:
                notes.append("Layer traffic: Redis unreachable, skipped.")
    report["elapsed_s"] = round(time.monotonic() - clock)
    delivery_runs = report["delivery"]["runs"] if report["delivery"] else []
    generator_bound = [r["label"] for r in report["runs"] + delivery_runs if (r["generator_cpu_util"] or 0) > 0.9]
    if generator_bound:
        notes.append(f"The load generator was CPU-bound (> 90%) in {generator_bound}: "
                     "those numbers understate the server.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{args.scale}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    table = markdown(report)
    print(table)
    if not args.no_report:
        with REPORT.open("a") as out:
            out.write(table)
    log(f"bench: {report['elapsed_s']} s; results in {path.relative_to(servers.ROOT)}"
        + ("" if args.no_report else f", table appended to {REPORT.relative_to(servers.ROOT)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
