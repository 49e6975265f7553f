"""The capacity search's walk, shared by our configurations (``bench.run.search``) and the Socket.IO
rig's (``bench.peer_seed.search``): doubling from a start, halving when the start already fails,
then bisecting between the largest pass and the smallest failure."""

from __future__ import annotations


def bracket(step, start: int, maximum: int, bisect: int) -> tuple[int | None, int | None]:
    """(largest passing, smallest failing) reader counts seen; ``step(n)`` runs one load of n readers."""
    passed, failed = None, None
    n = start
    while n <= maximum:  # up from the start, doubling
        if step(n):
            passed, n = n, n * 2
        else:
            failed = n
            break
    while passed is None and failed // 2 >= 10:  # or down, halving, when the start already fails
        n = failed // 2
        if step(n):
            passed = n
        else:
            failed = n
    for _ in range(bisect):
        if passed is None or failed is None or failed - passed <= max(10, passed // 20):
            break
        middle = (passed + failed) // 2
        if step(middle):
            passed = middle
        else:
            failed = middle
    return passed, failed
