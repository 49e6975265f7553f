"""Helpers shared by the tests, not tests themselves: real servers and clients (``servers``),
throwaway Redis servers (``redis_server``, ``cluster``), a TCP proxy that cuts the network
(``tcp_proxy``), simulated readers and the truth they are checked against (``simulation``),
rows and stores (``factories``), and free loopback ports (``ports``).

Fixtures stay in ``tests/conftest.py``; the settings of the server processes in
``tests/process_settings.py`` (their ``DJANGO_SETTINGS_MODULE``).
"""
