"""The bench's "Layer traffic" section: channel-layer messages per second at 2, 4 and 8 server
processes on Redis, under one load (issue #14: they must grow with processes, not rooms x processes²).

Each process counts the messages it sends (``group_send``) and those its hub receives
(bench/layer_counts.py); the section reports both per second over the measured window, with the
run's p99 and server CPU, so a saturated run shows as such. Several processes share the server
CPUs: the counts are what matters here, not the capacity.
"""

from __future__ import annotations

import argparse

from bench.servers import Config


def config(processes: int) -> Config:
    return Config(f"redis-{processes}-counted", f"{processes} Daphne processes, Redis store and layer, "
                  "layer messages counted", processes=processes, redis=True, env={"BENCH_COUNT_LAYER": "1"})


def run(args: argparse.Namespace, db_url: str, pks: list[int], run_once, log) -> dict:
    """One run per process count (``args.layer_processes``), ``args.layer_readers`` readers, the
    bench's workload otherwise."""
    rows = []
    for processes in args.layer_processes:
        try:
            result = run_once(config(processes), args.layer_readers, args, db_url, pks, f"layer-{processes}",
                              ramp=args.ramp, duration=args.duration, settle=args.settle, api=False)
        except Exception as exc:
            rows.append({"processes": processes, "failed": repr(exc)[:300]})
            log(f"  layer traffic, {processes} processes: run failed: {exc!r}")
            continue
        per_s = result["layer_per_s"] or {}
        rows.append({
            "processes": processes, "readers": args.layer_readers, "rooms": len(pks),
            "sent_per_s": round(per_s.get("sent", 0), 1), "received_per_s": round(per_s.get("received", 0), 1),
            "progress_per_s": result.get("progress_per_s"), "p99_s": result["latency_s"]["p99"],
            "errors": result["error_count"], "server_cpu_util": result["server_cpu_util"],
        })
        log(f"  layer traffic, {processes} processes: {rows[-1]['sent_per_s']} sent/s, "
            f"{rows[-1]['received_per_s']} received/s, p99 {rows[-1]['p99_s']} s")
    return {"rows": rows}


def markdown(section: dict) -> list[str]:
    lines = ["", "#### Layer traffic (channel-layer messages per second, all processes together)", "",
             "| processes | readers | rooms | sent/s | received by hubs/s | per process sent/s | p99 | server CPU "
             "| errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in section["rows"]:
        if "failed" in row:
            lines.append(f"| {row['processes']} | run failed: {row['failed']} |||||||| ")
            continue
        lines.append(
            f"| {row['processes']} | {row['readers']:,} | {row['rooms']} | {row['sent_per_s']:,.0f} | "
            f"{row['received_per_s']:,.0f} | {row['sent_per_s'] / row['processes']:,.1f} | {row['p99_s']} s | "
            f"{row['server_cpu_util']:.0%} | {row['errors']} |")
    return lines
