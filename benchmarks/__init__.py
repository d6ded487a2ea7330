"""sisa's benchmarks.

- ``benchmarks/suite/``: the tracked suite (pytest-benchmark): ingest, read one slice, fit,
  forget one row, verify, with peak memory. ``python -m benchmarks.compare BASE HEAD`` runs
  it at two commits and prints the ratios; CI runs it in quick mode (tests/test_benchmarks.py).
- ``python -m benchmarks.NAME``: the scripts behind the paper-style figures in
  docs/benchmarks.md, each printing its figures and a JSON record.
"""
