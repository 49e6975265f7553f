"""Benchmark of the presence server: ``python -m bench.run --help`` or ``make bench``.

``loadgen.py`` is the load generator (asyncio WebSocket clients in several processes),
``servers.py`` starts the servers under test and reads their CPU and memory from ``/proc``,
``run.py`` runs the scenarios and the capacity search and writes the report.
See ``docs/benchmarks.md`` for what is measured and how.
"""
