"""The Socket.IO design this project replaces, as one more configuration: its capacity on our workload.

The design lives in a rig outside this repository (``../shared/peers/seed-socketio``: a
reproduction of mx-space/core's NestJS + Socket.IO + Redis reader presence, and a load driver of
its own, ``drive.mjs``). Its code is never committed here: each run copies it into
``bench/results/peers/seed-socketio/`` (git-ignored), installs its pinned packages there with
``npm ci`` and runs ``server.mjs`` and ``drive.mjs`` directly (not its ``run.sh``), so that the
server is pinned to the bench's server CPUs, the driver to the client CPUs, and the workload is
the bench's: ``--articles`` rooms with Zipf(1.0) popularity (the driver's own), ``--tabs`` tabs
per reader, an update every ``--interval`` ±``--jitter``, ``--churn-fraction`` of the readers
replaced per second, presence over HTTP as in the original.

Capacity: the same search as ``bench.run.search`` (doubling from ``--search-start``, or halving
when it fails, then ``--bisect`` steps), and the same pass rule (p99 ≤ ``--p99-limit``, no errors,
at least 20 latency samples), plus one the rig needs: the server handled at least 95% of the
updates offered. Once saturated, its updates queue in HTTP or are dropped by the driver
(more than 1,280 in flight), and a latency over the updates that did arrive would flatter it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from bench import servers
from bench.search import bracket
from tests.support.servers import ServerProcess

NAME = "seed-socketio"
DEFAULT_SOURCE = servers.ROOT.parent / "shared" / "peers" / NAME
WORK = servers.ROOT / "bench" / "results" / "peers" / NAME  # the copy that runs (git-ignored)
HANDLED_MIN = 0.95  # share of the offered updates the server must handle for a step to pass
# The rig's own ramp (run.sh's RAMP): each connect costs the design a count over every socket, so
# a faster ramp mostly adds connect errors that say nothing about the steady load being searched.
RAMP_CONNECTIONS_PER_S = 200
# Late receipts count (the driver drains until none has arrived for 2 s); past this, a step that
# is still receiving fails the p99 limit many times over, so waiting longer only costs time.
DRAIN_MAX_S = 20
PASS_RULE = (f"p99 ≤ limit, no errors, ≥ 20 latency samples, and ≥ {HANDLED_MIN:.0%} of the offered "
             "updates handled by the server")


def source_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("SEED_SOCKETIO_DIR") or DEFAULT_SOURCE)


def unavailable(path: str | Path | None = None, redis_url: str | None = None) -> str | None:
    """Why the rig cannot run here, or None: it needs Node, npm, its folder and (for its server) Redis."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    source = source_dir(path)
    if not (source / "drive.mjs").is_file() or not (source / "package-lock.json").is_file():
        return f"no rig at {source} (set SEED_SOCKETIO_DIR or --peer-seed-dir)"
    if redis_url and not redis_ping(redis_url):
        return f"Redis unreachable at {redis_url}"
    return None


def available(path: str | Path | None = None) -> bool:
    return unavailable(path) is None


def redis_ping(url: str) -> bool:
    import redis

    try:
        with contextlib.closing(redis.Redis.from_url(url, socket_timeout=2)) as client:
            return bool(client.ping())
    except Exception:
        return False


# -- the copy that runs ---------------------------------------------------------------------


def prepare(source: Path, work: Path = WORK) -> Path:
    """Copy the rig into ``work`` and install its pinned packages (again only when its lock changes)."""
    work.mkdir(parents=True, exist_ok=True)
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in ("node_modules", "results")]
        target = work / Path(folder).relative_to(source)
        target.mkdir(exist_ok=True)
        for name in files:
            # Contents only: the rig's files are read-only, and a copied mode would block the next copy.
            shutil.copyfile(Path(folder) / name, target / name)
    lock = hashlib.sha256((work / "package-lock.json").read_bytes()).hexdigest()
    stamp = work / "node_modules" / ".bench-lock-sha256"
    if not stamp.is_file() or stamp.read_text() != lock:
        log(f"  {NAME}: npm ci in {work.relative_to(servers.ROOT)}")
        env = dict(os.environ, npm_config_cache=str(work.parent / ".npm-cache"))
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=work, env=env,
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
        stamp.write_text(lock)
    (work / "results").mkdir(exist_ok=True)
    return work


class RigServer(ServerProcess):
    """``node server.mjs`` (one process, Redis adapter and emitter, as the original) pinned to ``cpus``."""

    stop_timeout = 10.0

    def __init__(self, work: Path, redis_url: str, prefix: str, cpus: set[int] | None):
        env = dict(os.environ, REDIS_URL=redis_url, KEY_PREFIX=prefix, WORKERS="1", ADAPTER="redis",
                   LOG_LEVEL="warn", PROF_DIR=str(work / "results"))
        super().__init__(env, f"bench-{NAME}", start_timeout=30.0)
        self.work = work
        self.cpus = cpus
        if cpus:
            self.preexec_fn = lambda: os.sched_setaffinity(0, cpus)

    def command(self) -> list[str]:
        self.env["PORT"] = str(self.port)  # start() picks the port just before it asks for the command
        return ["node", str(self.work / "server.mjs")]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/healthz", timeout=2) as response:
                response.read()
        except OSError:
            return False
        return True


def delete_keys(redis_url: str, prefix: str) -> None:
    """The rig's keys of one step (those run.sh deletes); the Redis may be shared, so never a flush."""
    import redis

    with contextlib.suppress(Exception), contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        client.delete(f"{prefix}:socket", f"{prefix}:max_online_count", f"{prefix}:max_online_count:total")


def redis_pid(redis_url: str) -> int | None:
    """Redis's pid when it runs on this machine, for the driver's CPU readings."""
    import redis

    with contextlib.suppress(Exception), contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        pid = int(client.info("server")["process_id"])
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


# -- one load step ----------------------------------------------------------------------------


def churn_per_s(args, readers: int) -> float:
    """Readers replaced per second, as ``bench.run.churn_rate`` reckons it."""
    return args.churn if args.churn is not None else readers * args.churn_fraction


def run_step(work: Path, readers: int, args, label: str, duration: float) -> dict:
    """Start the rig's server, drive ``readers`` readers with its driver, and summarize its report."""
    prefix = f"seedbench-{os.getpid()}-{label}"
    out = work / "results" / f"{label}.json"
    out.unlink(missing_ok=True)
    rig = RigServer(work, args.redis_url, prefix, args.server_cpus)
    try:
        with rig:
            command = [
                "node", str(work / "drive.mjs"), "--url", rig.http_url, "--readers", str(readers),
                "--rooms", str(args.articles), "--zipf", "1.0", "--tabs", str(args.tabs),
                "--interval", str(round(args.interval * 1000)), "--jitter", str(args.jitter),
                "--churn", str(churn_per_s(args, readers)), "--duration", str(duration),
                "--ramp", str(RAMP_CONNECTIONS_PER_S), "--warmup", str(args.warmup), "--settle", "1",
                "--drain-max", str(DRAIN_MAX_S), "--presence", "http", "--pid", str(rig.proc.pid),
                "--label", label, "--out", str(out),
            ]
            pid = redis_pid(args.redis_url)
            if pid:
                command += ["--redis-pid", str(pid)]
            # The driver's own hard deadline is ramp + run + 4 control requests of up to 120 s.
            deadline = 120 + args.warmup + duration + DRAIN_MAX_S + 1 + 4 * 120 + 120
            client_cpus = args.client_cpus
            driver = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=deadline,
                                    preexec_fn=(lambda: os.sched_setaffinity(0, client_cpus)) if client_cpus else None)
            alive = rig.running
            server_log = rig.output
    finally:
        delete_keys(args.redis_url, prefix)
    (work / "results" / f"{label}.server.log").write_text(server_log)
    if not out.is_file():
        raise RuntimeError(f"{NAME} driver wrote no report (exit {driver.returncode}): {driver.stderr[-400:]}")
    report = json.loads(out.read_text())
    if report.get("aborted"):
        raise RuntimeError(f"{NAME} driver aborted: {report['aborted'][:400]}")
    result = summarize(report, server_log=server_log, server_alive=alive)
    result["report"] = str(out.relative_to(servers.ROOT)) if out.is_relative_to(servers.ROOT) else str(out)
    return result


def server_warnings(server_log: str, until: str | None) -> list[str]:
    """The server's warnings up to ``until`` (an ISO time, the driver's end): what it logs when a Redis
    command times out or a handler fails. Those logged once the driver closes its sockets are teardown."""
    lines = []
    for line in server_log.splitlines():
        if " warn " not in line or " listening on " in line:
            continue
        stamp = line[1:25] if line.startswith("[") else ""
        if until is None or stamp < until:
            lines.append(line)
    return lines


def summarize(report: dict, *, server_log: str = "", server_alive: bool = True) -> dict:
    """One step's numbers from the driver's report, in the shape of ``bench.run.summarize`` where they overlap."""
    window = report.get("window") or {}
    ramp = report.get("ramp") or {}
    latency = window.get("latency_other_reader_ms") or {}
    seconds = window.get("seconds") or 0
    offered = (window.get("updates_sent") or 0) + (window.get("updates_skipped_backpressure") or 0)
    offered_per_s = offered / seconds if seconds else None
    # Handled: updates the server finished (broadcast, or found no such socket) per second of its
    # stats window, which runs from the window's start to the stats request at its end.
    workers = (report.get("server_window_stats") or {}).get("workers") or []
    handled = sum(w["timers"]["presence_update"]["n"] for w in workers)
    stats_s = max((w["since_ms"] for w in workers), default=0) / 1000
    handled_per_s = handled / stats_s if stats_s else None
    warnings = server_warnings(server_log, report.get("finished_at"))
    errors = {
        "driver": window.get("errors") or {},  # connect errors (every phase), HTTP errors (window)
        "unexpected_disconnects": window.get("unexpected_disconnects") or 0,
        "server_log": warnings[:20],
        "server_died": not server_alive,
        "early_stop": window.get("early_stop"),
    }
    error_count = (sum(errors["driver"].values()) + errors["unexpected_disconnects"] + len(warnings)
                   + errors["server_died"] + bool(errors["early_stop"]))
    resources = (report.get("resources") or {}).get("window") or {}
    seconds_of = lambda value: None if value is None else round(value / 1000, 3)  # noqa: E731
    return {
        "config": NAME,
        "label": report.get("label"),
        "readers": (report.get("params") or {}).get("readers"),
        "connections": ramp.get("established"),
        "target_connections": ramp.get("target_connections"),
        "latency_s": {"n": latency.get("count") or 0,
                      **{k: seconds_of(latency.get(k)) for k in ("p50", "p95", "p99", "max")}},
        "delivered": (window.get("delivery") or {}).get("ratio_other_readers"),
        "offered_per_s": round(offered_per_s, 1) if offered_per_s is not None else None,
        "handled_per_s": round(handled_per_s, 1) if handled_per_s is not None else None,
        "handled_fraction": (round(handled_per_s / offered_per_s, 3)
                             if handled_per_s is not None and offered_per_s else None),
        "skipped_backpressure": window.get("updates_skipped_backpressure"),
        "messages_per_s": (window.get("messages_per_s") or {}).get("total"),
        "errors": errors,
        "error_count": error_count,
        "unhandled_rejections": sum(w["counters"].get("unhandled_rejections", 0) for w in workers),
        "server_cpu_util": (resources.get("server") or {}).get("cores"),
        "server_elu": workers[0].get("event_loop_utilization") if workers else None,
        "driver_cpu_util": (resources.get("driver") or {}).get("cores"),
        "driver_saturated": (report.get("resources") or {}).get("driver_saturated"),
        "other_cores": (resources.get("machine") or {}).get("other_cores"),
    }


def passes(result: dict, limit: float) -> bool:
    """``bench.run.passes``, and the server kept up with the updates offered (see the module's docstring)."""
    p99 = result["latency_s"]["p99"]
    handled = result["handled_fraction"]
    return (result["error_count"] == 0 and p99 is not None and p99 <= limit and result["latency_s"]["n"] >= 20
            and handled is not None and handled >= HANDLED_MIN)


# -- the capacity search ------------------------------------------------------------------------


def search(args, work: Path) -> dict:
    """The rig's capacity under the bench's search options (``--search-*``, ``--bisect``, ``--p99-limit``)."""
    steps = []

    def step(n: int) -> bool:
        try:
            result = run_step(work, n, args, f"search-{n}-{time.strftime('%H%M%S')}", args.search_duration)
        except Exception as exc:
            log(f"  search {NAME} {n:>6} readers: run failed: {exc!r}"[:600])
            steps.append({"readers": n, "ok": False, "failed": repr(exc)[:500], "result": None})
            return False
        ok = passes(result, args.p99_limit)
        steps.append({"readers": n, "ok": ok, "p99": result["latency_s"]["p99"], "errors": result["error_count"],
                      "handled_fraction": result["handled_fraction"], "result": result})
        log(f"  search {NAME} {n:>6} readers: p99 {result['latency_s']['p99']} s, errors {result['error_count']}, "
            f"handled {fmt_share(result['handled_fraction'])} of {result['offered_per_s']}/s, delivered "
            f"{fmt_share(result['delivered'])}, server CPU {fmt_share(result['server_cpu_util'])}, driver CPU "
            f"{fmt_share(result['driver_cpu_util'])}, {'pass' if ok else 'FAIL'}")
        return ok

    passed, failed = bracket(step, args.search_start, args.search_max, args.bisect)
    return {"config": NAME, "capacity": passed, "first_failure": failed, "reached_max": failed is None,
            "rule": PASS_RULE, "steps": steps}


def capacity(args) -> dict:
    """The section of the report: the rig's search, or why it was skipped."""
    reason = unavailable(args.peer_seed_dir, args.redis_url)
    if reason is None and args.hot_share is not None:
        reason = "the rig's driver has no forced hot-article share (--hot-share)"
    if reason:
        log(f"  {NAME}: skipped, {reason}")
        return {"config": NAME, "skipped": reason}
    try:
        work = prepare(source_dir(args.peer_seed_dir))
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"  {NAME}: skipped, could not install the rig: {exc!r}"[:600])
        return {"config": NAME, "skipped": f"could not install the rig: {exc!r}"[:500]}
    return search(args, work)


# -- report -------------------------------------------------------------------------------------


TARGET_RATIO = 6.0  # the memory configuration's capacity against the Socket.IO design's


def markdown(section: dict, ours: dict | None, p99_limit: float) -> list[str]:
    """The report's lines: the rig's capacity, and ``memory``'s against it."""
    if section.get("skipped"):
        return ["", f"Socket.IO design (`{NAME}` rig): skipped, {section['skipped']}."]
    theirs = section["capacity"]
    shown = f"≥ {theirs}" if section["reached_max"] else (str(theirs) if theirs else "–")
    walk = ", ".join(f"{s['readers']}: {step_text(s)}" for s in section["steps"])
    lines = [
        "",
        f"Socket.IO design (the `{NAME}` rig, `bench/peer_seed.py`: same workload, its own driver; pass: "
        f"{PASS_RULE.replace('limit', f'{p99_limit} s')}): capacity {shown} readers "
        f"(first failure {section['first_failure'] or '–'}). Steps: {walk}.",
    ]
    lines.append(f"`memory` / Socket.IO design: {ratio_text(ours, section)}.")
    return lines


def step_text(step: dict) -> str:
    result = step["result"]
    if result is None:
        return "failed to run ✗"
    text = f"p99 {step['p99']} s, handled {fmt_share(step['handled_fraction'])}"
    if step["errors"]:
        text += f", {step['errors']} errors"
    if result.get("driver_saturated"):
        text += ", driver saturated"  # its latencies then include the driver's own queue
    return text + (" ✓" if step["ok"] else " ✗")


def ratio_text(ours: dict | None, theirs: dict) -> str:
    """``memory``'s capacity over the rig's, against the target; a search that hit its maximum gives a bound."""
    mine, seed = (ours or {}).get("capacity"), theirs.get("capacity")
    if not mine or not seed:
        return "– (a capacity is missing: search `memory` in the same run, from a start both pass)"
    ratio = mine / seed
    if ours["reached_max"] and theirs["reached_max"]:
        return f"{mine} / {seed}: both reached the search's maximum, no ratio (raise `--search-max`)"
    bound = "≥ " if ours["reached_max"] else "≤ " if theirs["reached_max"] else ""
    if ratio >= TARGET_RATIO:
        verdict = "not yet known (raise `--search-max`)" if bound == "≤ " else "met"
    else:
        verdict = "not yet known (raise `--search-max`)" if bound == "≥ " else "not met"
    return f"{mine} / {seed} = **{bound}{ratio:.1f}×**; target ≥ {TARGET_RATIO:.0f}×: {verdict}"


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def log(message: str) -> None:
    print(message, flush=True)
