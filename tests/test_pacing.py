"""When a room's frames leave (presence/pacing.py): at once when quiet, two per tick when busy,
one per tick when the CPU is loaded. Pure: a fake clock and a fake CPU meter."""

from __future__ import annotations

import random
import statistics

import pytest

from presence.pacing import (
    BUSY_SHARE,
    FAN_OUT_DELAY,
    IDLE_SHARE,
    LATE_SECONDS,
    SAMPLE_SECONDS,
    Cadence,
    CpuMeter,
    Pacing,
)

TICK, WINDOW = 1.0, 0.1


class Clocks:
    """The time, and the CPU share the meter reads (counting its readings)."""

    def __init__(self):
        self.now = 1000.0
        self.share = 0.0
        self.readings = 0

    def run(self, seconds: float, cpu_share: float = 0.0) -> None:
        self.now += seconds
        self.share = cpu_share

    def meter(self) -> float:
        self.readings += 1
        return self.share


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def pacing(clocks) -> Pacing:
    return Pacing(TICK, WINDOW, clock=lambda: clocks.now, meter=clocks.meter)


def deliver(
    pacing: Pacing, clocks: Clocks, changes: list[float], until: float, cpu_share: float = 0.0
) -> list[tuple[float, float]]:
    """Simulate one room, in steps of a millisecond: a change at each time in ``changes``, a frame as
    soon as the room is due, the process using ``cpu_share`` of a core. Returns (frame time, time of
    the oldest change it carried)."""
    cadence, frames, pending = Cadence(), [], []
    changes = sorted(changes)
    start, clocks.share = clocks.now, cpu_share
    for step in range(round((until - start) * 1000)):
        clocks.now = start + step / 1000
        while changes and changes[0] <= clocks.now + 1e-9:
            pending.append(changes.pop(0))
        if pending and pacing.due(cadence, pending[0]) <= clocks.now + 1e-9:
            pacing.sent(cadence, clocks.now, pending[0], len(pending))
            frames.append((clocks.now, pending[0]))
            pending = []
    return frames


def test_a_change_in_a_quiet_room_goes_at_once(pacing, clocks):
    assert pacing.due(Cadence(), clocks.now) <= clocks.now


def test_two_readers_moving_in_turn_each_go_at_once(pacing, clocks):
    """Two tabs, each moving once a second, half a second apart: two frames per tick, none held."""
    start = clocks.now
    changes = [start + k * 0.5 for k in range(20)]
    frames = deliver(pacing, clocks, changes, start + 10.2)
    assert len(frames) == 20
    assert max(sent - oldest for sent, oldest in frames) < 1e-6


def moves(readers: int, seconds: float, start: float, seed: int = 1) -> list[float]:
    """Readers each moving about once a second (±20%, as the widget and the benchmark do)."""
    rnd = random.Random(seed)
    times = []
    for _ in range(readers):
        at = start + rnd.random()
        while at < start + seconds:
            times.append(at)
            at += rnd.uniform(0.8, 1.2)
    return times


@pytest.mark.parametrize(("readers", "median_wait"), [(2, 0.08), (3, 0.26), (40, 0.26)])
def test_a_move_waits_little_in_a_room_of_two_and_a_quarter_tick_in_a_crowd(pacing, clocks, readers, median_wait):
    """Two readers make two changes a second, the most a room may send: a held move must not
    make the room "busy" (half a tick between frames) unless its frame merged several changes."""
    start = clocks.now
    changes = moves(readers, 60, start)
    frames = deliver(pacing, clocks, changes, start + 61)
    carried = sorted(changes)
    waits, cursor = [], 0
    for sent, _ in frames:
        while cursor < len(carried) and carried[cursor] <= sent + 1e-9:
            waits.append(sent - carried[cursor])
            cursor += 1
    assert statistics.median(waits) <= median_wait, statistics.median(waits)
    assert max(waits) <= TICK + 1e-6  # never more than a tick


def test_changes_within_the_window_go_together_in_one_trailing_frame(pacing, clocks):
    start = clocks.now
    frames = deliver(pacing, clocks, [start, start + 0.02, start + 0.05, start + 0.08], start + 1)
    assert [round(sent - start, 3) for sent, _ in frames] == [0.0, 0.1]


def test_a_busy_room_gets_two_evenly_spaced_frames_per_tick(pacing, clocks):
    """Changes every 10 ms for 10 s: never more than two frames in any tick, and after the first
    burst they come every half tick, so a change waits a quarter tick on average."""
    start = clocks.now
    frames = deliver(pacing, clocks, [start + k * 0.01 for k in range(1000)], start + 10)
    times = [sent for sent, _ in frames]
    assert all(later - earlier >= TICK - 1e-9 for earlier, later in zip(times, times[2:], strict=False))
    assert 19 <= len(frames) <= 21
    gaps = [round(later - earlier, 2) for earlier, later in zip(times[2:], times[3:], strict=False)]
    assert set(gaps) == {0.5}


@pytest.mark.parametrize("aligned", [True, False])
def test_a_busy_room_is_on_the_shared_grid_only_with_several_processes(clocks, aligned):
    """Several processes: the frames of a busy room leave a moment after the half-tick points of
    the wall clock, as on every other process. One process: half a tick after its last frame,
    whatever the phase (the grid's first point can cost up to half a tick more)."""
    pacing = Pacing(TICK, WINDOW, clock=lambda: clocks.now, meter=clocks.meter, aligned=aligned)
    clocks.now = start = 1000.013
    frames = deliver(pacing, clocks, [start + k * 0.01 for k in range(500)], start + 5)
    phases = {round(sent % (TICK / 2), 3) for sent, _ in frames[2:]}
    assert phases == ({FAN_OUT_DELAY * TICK / 2} if aligned else {0.013})  # the first frame's phase


class Process:
    """One process's side of a room in the two-process simulation below: its readers' moves, its
    batches to the other process, its frames to its own tabs (carrying both processes' moves)."""

    def __init__(self, clocks: Clocks, changes: list[float]):
        self.pacing = Pacing(TICK, WINDOW, clock=lambda: clocks.now, meter=clocks.meter)
        self.batches, self.frames = Cadence(), Cadence()
        self.changes = sorted(changes)
        self.outbox: list[float] = []  # moves not yet in a batch
        self.pending: list[tuple[float, bool]] = []  # (move, made here) not yet in a frame
        self.arriving: list[tuple[float, list[float]]] = []  # the other's batches on their way

    def step(self, now: float, other: Process, waits: dict[bool, list[float]]) -> None:
        while self.changes and self.changes[0] <= now + 1e-9:
            self.outbox.append(self.changes[0])
            self.pending.append((self.changes.pop(0), True))
        while self.arriving and self.arriving[0][0] <= now + 1e-9:
            self.pending += [(move, False) for move in self.arriving.pop(0)[1]]
        if self.outbox and self.pacing.due(self.batches, self.outbox[0], batch=True) <= now + 1e-9:
            self.pacing.sent(self.batches, now, self.outbox[0], len(self.outbox), batch=True)
            other.arriving.append((now + 0.005, self.outbox))  # 5 ms through the channel layer
            self.outbox = []
        since = min((move for move, _ in self.pending), default=None)
        if since is not None and self.pacing.due(self.frames, since) <= now + 1e-9:
            self.pacing.sent(self.frames, now, since, len(self.pending))
            for move, here in self.pending:
                waits[here].append(now - move)
            self.pending = []


@pytest.mark.parametrize("readers_each", [3, 10, 20])
def test_a_busy_rooms_batches_and_frames_share_one_grid_across_processes(clocks, readers_each):
    """A crowd spread over two processes. A busy room's batches leave at the points of a
    half-tick grid (the wall clock's, the same on every process) and its frames a moment after
    each point, with the other process's batch of that point in: a move made elsewhere waits for
    one point, not for its batch and then, at an unrelated phase, for the frame (p50 0.48-0.63 s
    in this simulation before the grid)."""
    start = clocks.now
    a, b = (Process(clocks, moves(readers_each, 30, start, seed=seed)) for seed in (1, 2))
    waits: dict[bool, list[float]] = {True: [], False: []}
    for step in range(31_000):
        clocks.now = start + step / 1000
        a.step(clocks.now, b, waits)
        b.step(clocks.now, a, waits)
    assert statistics.median(waits[True]) <= 0.3, "a move shown on its own process"
    assert statistics.median(waits[False]) <= 0.35, "a move shown on the other process"
    assert max(waits[True] + waits[False]) <= 1.5 * TICK


@pytest.mark.parametrize(
    ("shares", "loaded"),
    [
        ([0.0], False),
        ([BUSY_SHARE - 0.01], False),
        ([BUSY_SHARE], True),
        ([BUSY_SHARE, IDLE_SHARE], True),  # stays loaded until under IDLE_SHARE: it does not flap
        ([BUSY_SHARE, IDLE_SHARE - 0.01], False),
    ],
)
def test_a_process_is_loaded_from_busy_share_until_under_idle_share(pacing, clocks, shares, loaded):
    for share in shares:
        clocks.run(SAMPLE_SECONDS, cpu_share=share)
        pacing.loaded()
    assert pacing.loaded() is loaded


def test_a_loaded_process_sends_one_frame_per_room_per_tick_on_the_tick_grid(pacing, clocks):
    """As the hub always did: batches at the tick, frames a moment later (the other processes'
    batches of the same tick are in), whenever the changes came."""
    clocks.now = 2000.0
    clocks.run(SAMPLE_SECONDS, cpu_share=0.95)
    start = clocks.now
    frames = deliver(pacing, clocks, [start + k * 0.01 for k in range(500)], start + 5, cpu_share=0.95)
    assert [round(sent % TICK, 3) for sent, _ in frames] == [FAN_OUT_DELAY * TICK] * 5
    assert pacing.due(Cadence(), 2000.8, batch=True) == 2001.0  # batches at the tick itself


def test_the_load_is_sampled_not_read_at_every_call(pacing, clocks):
    """Between samples the verdict holds still (the hub asks at every change)."""
    clocks.run(SAMPLE_SECONDS, cpu_share=1.0)
    assert pacing.loaded()
    clocks.run(SAMPLE_SECONDS / 2, cpu_share=0.0)
    for _ in range(100):
        assert pacing.loaded()
    clocks.run(SAMPLE_SECONDS, cpu_share=0.0)
    assert not pacing.loaded()
    assert clocks.readings == 2


def test_a_process_whose_loop_wakes_late_is_loaded_whatever_its_cpu_share(pacing, clocks):
    """Processes sharing a saturated core each use only part of it: their loops wake late."""
    clocks.run(SAMPLE_SECONDS, cpu_share=IDLE_SHARE - 0.05)
    pacing.late(0.02)
    pacing.late(LATE_SECONDS)
    assert pacing.loaded()
    clocks.run(SAMPLE_SECONDS, cpu_share=IDLE_SHARE - 0.05)
    pacing.late(LATE_SECONDS * 0.6)
    assert pacing.loaded()  # not yet calm
    clocks.run(SAMPLE_SECONDS, cpu_share=IDLE_SHARE - 0.05)
    pacing.late(0.01)
    assert not pacing.loaded()


def test_the_meter_reads_the_process_share_of_a_core():
    now, cpu = [0.0], [0.0]
    meter = CpuMeter(clock=lambda: now[0], cpu_time=lambda: cpu[0])
    now[0], cpu[0] = 2.0, 0.5
    assert meter() == 0.25
    now[0], cpu[0] = 3.0, 1.5
    assert meter() == 1.0
