"""When a room's next frame may leave: at once in a quiet room, in bounded batches in a busy one.

A change in a room that sent nothing lately goes out at once (the leading edge); changes that
follow while the room must wait are merged into one trailing frame. Two limits, both times
since earlier frames of the same room:

- the protocol's: at most two frames per room per tick (``PRESENCE_TICK``, docs/protocol.md);
- a spacing: short (``PRESENCE_COALESCE_WINDOW``) after a leading frame, half a tick after a
  trailing frame that merged several changes (the room is busy: two frames per tick, evenly
  spaced, make a change wait least on average).

With several processes (``aligned``), a busy room's batches leave at the points of a half-tick
grid of the wall clock, the same on every process, and its frames ``FAN_OUT_DELAY`` of a step
later, with the other processes' batches of that point in. Paced each on its own, a batch and the
receiving process's frame met at unrelated phases and a move made elsewhere waited for both
(tests/test_pacing.py's two-process simulation, three seeds, 3 to 20 readers on each process:
p50 of the moves made elsewhere 0.42-0.58 s, on the grid 0.32-0.34 s). The grid costs a tail: the
first frame on it after an off-grid one may wait up to half a tick more (p99 of the local moves
0.52-0.73 s before, 0.60-0.73 s on it), so one process alone keeps the plain spacing.

A loaded process (its CPU share at ``BUSY_SHARE`` of a core or more, or its event loop
``LATE_SECONDS`` late to wake, until both are well under) goes back to one frame per room per
tick, on the tick's grid, as the hub always did: every
process publishes its batches at the tick and sends its frames ``FAN_OUT_DELAY`` of a tick
later, with the other processes' batches of the same tick in. A leading edge costs a store
round trip and a frame of its own; a loaded process saves them and keeps its capacity.

Simulated (tests/test_pacing.py's model, readers moving once a second ±20%): in a room of two,
half the moves wait under 0.08 s; from five readers on, a move waits a quarter tick on average.

``Pacing`` is pure (the clock and the meter are injected); the hub decides what a frame holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

# The process's CPU share of a core (read every SAMPLE_SECONDS) at which it counts as loaded, and
# under which it no longer does (between the two it stays as it was, so it does not flap).
BUSY_SHARE = 0.5
IDLE_SHARE = 0.3
SAMPLE_SECONDS = 0.5
# An event loop this late to wake (``Pacing.late``) is loaded too, whatever its own CPU share:
# processes sharing a saturated core each use only part of it.
LATE_SECONDS = 0.1

# Frames on the grid leave this fraction of its step (a tick when loaded, half a tick in a busy
# room) after its points, where the batches leave: time for the other processes' to arrive.
FAN_OUT_DELAY = 0.1


@dataclass(slots=True)
class Cadence:
    """The frames one room has sent (or the batches one room has published)."""

    last: float = -math.inf
    before_last: float = -math.inf
    busy: bool = False  # the last one was a trailing frame that merged several changes


class Pacing:
    """The rules above, with the CPU load they adapt to."""

    def __init__(
        self,
        tick: float,
        window: float,
        clock: Callable[[], float],
        meter: Callable[[], float] | None = None,
        aligned: bool = True,
    ):
        self.tick = tick
        self.aligned = aligned  # busy rooms on the half-tick grid (several processes)
        self.shortest = min(window, tick)
        self.clock = clock
        self.meter = meter or CpuMeter()
        self.load = 0.0  # the meter's last reading
        self.lateness = 0.0  # the latest wake-up reported since
        self._loaded = False
        self._sampled = clock()

    def late(self, seconds: float) -> None:
        """The event loop woke ``seconds`` after it was due (the hub's loops report it)."""
        self.lateness = max(self.lateness, seconds)

    def loaded(self) -> bool:
        """Whether the process is loaded; the meter is read at most every SAMPLE_SECONDS."""
        now = self.clock()
        if now - self._sampled >= SAMPLE_SECONDS:
            self.load, self._sampled = self.meter(), now
            late, self.lateness = self.lateness, 0.0
            busy = self.load >= BUSY_SHARE or late >= LATE_SECONDS
            calm = self.load < IDLE_SHARE and late < LATE_SECONDS / 2
            self._loaded = busy or (self._loaded and not calm)
        return self._loaded

    def due(self, cadence: Cadence, since: float, batch: bool = False) -> float:
        """When the room's next frame (or ``batch``) may leave, for changes pending since ``since``
        (a time in the past: now)."""
        return self._due(cadence, since, batch)[0]

    def _due(self, cadence: Cadence, since: float, batch: bool) -> tuple[float, bool]:
        """``due``, and whether it is a point of the grid (a busy room, or a loaded process)."""
        spacing = self.tick / 2 if cadence.busy else self.shortest
        earliest = max(cadence.last + spacing, cadence.before_last + self.tick)
        step = self.tick if self.loaded() else self.tick / 2 if cadence.busy and self.aligned else None
        if step is None:
            return earliest, False
        offset = 0.0 if batch else FAN_OUT_DELAY * step
        return math.ceil(round((max(earliest, since) - offset) / step, 6)) * step + offset, True

    def sent(self, cadence: Cadence, now: float, since: float, changes: int, batch: bool = False) -> None:
        """Record a frame (or ``batch``) of ``changes`` changes sent at ``now``, the first pending
        since ``since``. Changes that arrived before the room was due had to wait: that frame was a
        trailing one. A frame on the grid counts as sent at its point, however late the flush ran
        after it: the next point stays in reach."""
        due, on_grid = self._due(cadence, since, batch)
        cadence.busy = changes > 1 and since < due
        cadence.before_last, cadence.last = cadence.last, due if on_grid and due <= now else now


class CpuMeter:
    """This process's share of a core since the last reading (its own CPU time: other tenants of
    the machine do not make it loaded; a core it shares with them shows as lateness instead)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, cpu_time: Callable[[], float] = time.process_time):
        self.clock, self.cpu_time = clock, cpu_time
        self._last = (clock(), cpu_time())

    def __call__(self) -> float:
        now, cpu = self.clock(), self.cpu_time()
        then, cpu_then = self._last
        self._last = (now, cpu)
        return (cpu - cpu_then) / (now - then) if now > then else 0.0
