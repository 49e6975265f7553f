"""The soak's arithmetic (``bench/soak.py``): slopes, per-minute rates and the flat verdict, on made-up samples."""

from __future__ import annotations

import pytest

from bench.soak import LEVEL_TOLERANCE, fit, per_minute, thinned, trend, trends


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
