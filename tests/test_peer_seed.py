"""The Socket.IO rig's side of the benchmark (``bench/peer_seed.py``): reading its driver's report,
its pass rule, the search's walk and the ratio line. Pure: no Node, no server."""

from __future__ import annotations

from bench import peer_seed
from bench.search import bracket


def driver_report(*, p99_ms=40.0, sent=1990, skipped=0, handled=2000, since_ms=10_000, errors=None) -> dict:
    """The parts of a ``drive.mjs`` report that the bench reads, for 200 readers over 10 s."""
    return {
        "label": "search-200",
        "params": {"readers": 200},
        "finished_at": "2026-12-01T11:00:30.000Z",
        "ramp": {"target_connections": 240, "established": 240, "errors": 0},
        "window": {
            "seconds": 10.0,
            "updates_sent": sent,
            "updates_skipped_backpressure": skipped,
            "latency_other_reader_ms": {"count": 30_000, "p50": 2.0, "p95": 8.0, "p99": p99_ms, "max": 60.0},
            "delivery": {"ratio_other_readers": 1.0},
            "messages_per_s": {"total": 4000.0},
            "errors": errors or {},
            "unexpected_disconnects": 0,
            "early_stop": None,
        },
        "resources": {"window": {"server": {"cores": 0.25}, "driver": {"cores": 0.2},
                                 "machine": {"other_cores": 0.0}}, "driver_saturated": False},
        "server_window_stats": {"workers": [{
            "since_ms": since_ms, "event_loop_utilization": 0.25,
            "timers": {"presence_update": {"n": handled}}, "counters": {"unhandled_rejections": 0},
        }]},
    }


def test_a_healthy_step_passes_with_its_latency_in_seconds():
    result = peer_seed.summarize(driver_report())
    assert result["latency_s"]["p99"] == 0.04
    assert result["offered_per_s"] == 199.0 and result["handled_per_s"] == 200.0
    assert result["error_count"] == 0
    assert peer_seed.passes(result, 1.5)


def test_a_saturated_server_fails_on_updates_handled_even_when_the_arrivals_were_quick():
    """Past saturation the driver drops updates (backpressure) and the server handles a fraction:
    the updates that did arrive may still show a low p99."""
    result = peer_seed.summarize(driver_report(sent=1200, skipped=800, handled=900))
    assert result["handled_fraction"] == 0.45
    assert not peer_seed.passes(result, 1.5)


def test_driver_errors_and_server_warnings_before_the_end_fail_a_step():
    log = ("[2026-12-01T11:00:01.000Z] warn 42 worker 42 listening on 127.0.0.1:3401 adapter=redis\n"
           "[2026-12-01T11:00:40.000Z] warn 42 disconnect handler failed: Command timed out\n")
    quiet = peer_seed.summarize(driver_report(), server_log=log)
    assert quiet["error_count"] == 0  # the listening line, and a warning once the driver closed its sockets
    late = log + "[2026-12-01T11:00:20.000Z] warn 42 unhandledRejection: Command timed out (total 3)\n"
    assert peer_seed.summarize(driver_report(), server_log=late)["error_count"] == 1
    failed = peer_seed.summarize(driver_report(errors={"connect_error: timeout": 2}))
    assert failed["error_count"] == 2 and not peer_seed.passes(failed, 1.5)
    assert peer_seed.summarize(driver_report(), server_alive=False)["error_count"] == 1


def test_the_walk_doubles_then_bisects_like_the_bench_search():
    tried = []

    def step(n):
        tried.append(n)
        return n <= 700

    assert bracket(step, 100, 6400, 2) == (700, 800)
    assert tried == [100, 200, 400, 800, 600, 700]
    tried.clear()
    assert bracket(step, 2500, 6400, 0) == (625, 1250)  # halving when the start fails


def test_the_ratio_says_when_a_capacity_is_only_a_bound():
    def found(capacity, reached_max=False):
        return {"capacity": capacity, "reached_max": reached_max}

    assert "**6.4×**; target ≥ 6×: met" in peer_seed.ratio_text(found(4480), found(700))
    assert "not met" in peer_seed.ratio_text(found(1500), found(700))
    assert "**≥ 2.1×**" in peer_seed.ratio_text(found(1500, True), found(700))
    assert "not yet known" in peer_seed.ratio_text(found(1500, True), found(700))
    assert "–" in peer_seed.ratio_text(None, found(700))
