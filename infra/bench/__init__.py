"""Benchmarks that run the real parts side by side: ``python -m infra.bench.<name>``.

Each benchmark starts what it measures (private servers on loopback, free ports), reports ratios
of rates measured in the same run (the machines are small and shared, so absolute numbers drift),
prints a table and, as its last stdout line, one JSON object; everything it started is stopped on
every exit path.
"""
