"""The soak's arithmetic (``bench/soak.py``): slopes, per-minute rates and the flat verdict, on made-up samples;
its reading of a run's Redis keys, on a real Redis; its profiles' summary."""

from __future__ import annotations

import uuid

import pytest
import redis

from bench.soak import LEVEL_TOLERANCE, fit, largest, per_minute, profile_summary, redis_keys, thinned, trend, trends


def test_fit_recovers_a_line_and_its_error_is_zero():
    slope, stderr = fit([0, 1, 2, 3], [10, 12, 14, 16])
    assert slope == pytest.approx(2.0)
    assert stderr == pytest.approx(0.0)


def test_fit_needs_two_times_and_three_points_for_an_error():
    assert fit([1.0], [5.0]) == (None, None)
    assert fit([1.0, 1.0], [5.0, 6.0]) == (None, None)
    assert fit([0.0, 1.0], [5.0, 6.0]) == (pytest.approx(1.0), None)


def test_per_minute_is_the_difference_over_each_interval_at_its_middle():
    times, rates = per_minute([0, 1, 3], [100, 160, 280])
    assert times == [0.5, 2.0]
    assert rates == [pytest.approx(60.0), pytest.approx(60.0)]


def test_a_level_within_the_tolerance_is_flat_and_one_past_it_is_not():
    minutes = [float(m) for m in range(5, 61)]
    # 100 MiB drifting by 0.4% of itself per 10 minutes: within 0.5%.
    within = trend(minutes, [102_400 + 102_400 * 0.0004 * m for m in minutes], "level")
    past = trend(minutes, [102_400 + 102_400 * 0.0008 * m for m in minutes], "level")
    assert within["flat"] is True
    assert past["flat"] is False
    assert past["drift_per_10_min"] > LEVEL_TOLERANCE


def test_a_growth_series_gets_a_slope_and_no_verdict():
    result = trend([0, 1, 2, 3], [0, 500, 1000, 1500], "growth")
    assert result["slope_per_min"] == pytest.approx(500.0)
    assert result["flat"] is None


def sample(minute: int, **readings) -> dict:
    """A sample whose database was read half a minute after the rest (after a checkpoint)."""
    return {"t_min": float(minute), "db_t_min": minute + 0.5, "rss_kib": 100_000, "cpu_s": 30.0 * minute,
            "redis_keys": 400, "open_sessions": 900, "stale_sessions": 0, "rows": 540 * minute, **readings}


def test_trends_leave_out_the_warm_up_and_the_missing_readings():
    samples = [sample(m, rss_kib=50_000 if m < 5 else 100_000) for m in range(0, 21)]
    samples[10]["open_sessions"] = None  # the database was busy at minute 10
    result = trends(samples, warmup_minutes=5)
    assert result["rss_kib"]["n"] == 16
    assert result["rss_kib"]["slope_per_min"] == pytest.approx(0.0)  # the ramp's growth left out
    assert result["rss_kib"]["flat"] is True
    assert result["open_sessions"]["n"] == 15
    assert result["rows"]["slope_per_min"] == pytest.approx(540.0)
    assert result["rows_per_min"]["mean"] == pytest.approx(540.0)
    assert result["rows_per_min"]["flat"] is True
    assert result["cpu_util"]["mean"] == pytest.approx(0.5)  # 30 CPU seconds a minute
    assert result["stale_sessions"]["flat"] is True  # none at all


def test_a_leak_is_not_flat():
    samples = [sample(m, rss_kib=100_000 + 200 * m) for m in range(0, 61)]
    assert trends(samples, warmup_minutes=5)["rss_kib"]["flat"] is False  # 2% of the mean per 10 minutes


def test_stale_sessions_are_judged_against_the_open_ones():
    # One more session left open every 10 minutes: 0.1% of 900, within 0.5%; one a minute is not.
    few = [sample(m, stale_sessions=m // 10) for m in range(0, 61)]
    many = [sample(m, stale_sessions=m) for m in range(0, 61)]
    assert trends(few, warmup_minutes=5)["stale_sessions"]["flat"] is True
    assert trends(many, warmup_minutes=5)["stale_sessions"]["flat"] is False


def test_the_markdown_table_keeps_the_first_and_last_samples():
    samples = [{"t_min": float(m)} for m in range(61)]
    shown = thinned(samples)
    assert shown[0] is samples[0] and shown[-1] is samples[-1]
    assert len(shown) <= 14
    assert thinned(samples[:5]) == samples[:5]


def test_redis_keys_are_counted_by_owner_and_the_stores_weighed(redis_url):
    prefix = f"soak-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"{prefix}-layer:x", "1")
        client.set(f"{prefix}-cache:y", "1")
        client.zadd(f"{prefix}:room:article:1", {f"reader-{i}": i for i in range(200)})
        client.set(f"{prefix}:online", "7")
        counts, sizes = redis_keys(client, prefix)
        assert counts == {"store": 2, "layer": 1, "cache": 1}
        assert set(sizes) == {f"{prefix}:room:article:1", f"{prefix}:online"}  # the store's keys only
        assert sizes[f"{prefix}:room:article:1"] > 200 * 8 > sizes[f"{prefix}:online"]
        assert list(largest(sizes, prefix, n=1)) == [":room:article:1"]
    finally:
        client.delete(*client.keys(f"{prefix}*"))
        client.close()


def test_a_profile_summary_gives_each_threads_busy_share_and_the_heaviest_functions():
    collapsed = "\n".join([
        "thread (0x1);run (asyncio/base_events.py:600);_fan_out (presence/room_frames.py:40);write (tcp.py:9) 150",
        "thread (0x1);run (asyncio/base_events.py:601);progress (presence/hub.py:300) 50",
        "thread (0x1);run (asyncio/base_events.py:600);select (selectors.py:468) 400",  # waiting: idle
        "thread (0x2);_worker (concurrent/futures/thread.py:80);write (presence/reading_sessions.py:60) 100",
        "",
    ])
    summary = profile_summary(collapsed, seconds=10)  # 1,000 samples would be a core busy throughout
    assert summary["samples"] == 300
    assert summary["busy_per_thread"] == {"thread (0x1)": 0.2, "thread (0x2)": 0.1}
    inclusive = summary["inclusive"]
    assert list(inclusive) == [  # the event loop's and the pool's frames, under everything, left out
        "_fan_out (presence/room_frames.py)", "write (tcp.py)", "write (presence/reading_sessions.py)",
        "progress (presence/hub.py)",
    ]
    assert inclusive["_fan_out (presence/room_frames.py)"] == 0.5
    assert inclusive["write (presence/reading_sessions.py)"] == pytest.approx(100 / 300, abs=1e-4)


def test_a_machine_slowing_down_is_told_from_a_server_getting_costlier():
    # CPU seconds per minute: a machine 0.5% slower each minute slows the server and the load
    # generator alike; a server doing more work each minute is alone in rising.
    def run(server_growth: float, generator_growth: float) -> list[dict]:
        samples, server, generator = [], 0.0, 0.0
        for m in range(61):
            samples.append(sample(m, cpu_s=server, generator_cpu_s=generator))
            server += 30.0 * (1 + server_growth) ** m
            generator += 15.0 * (1 + generator_growth) ** m
        return samples

    slower_machine = trends(run(0.005, 0.005), warmup_minutes=5)
    assert slower_machine["cpu_util"]["flat"] is False
    assert slower_machine["generator_cpu_util"]["flat"] is False
    assert slower_machine["cpu_per_generator_cpu"]["flat"] is True
    assert slower_machine["cpu_per_generator_cpu"]["mean"] == pytest.approx(2.0)

    costlier_server = trends(run(0.005, 0.0), warmup_minutes=5)
    assert costlier_server["generator_cpu_util"]["flat"] is True
    assert costlier_server["cpu_per_generator_cpu"]["flat"] is False
