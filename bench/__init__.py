"""Benchmarks (never run as tests): ``python -m bench.http``, ``python -m bench.pipeline``,
``python -m bench.report``. See docs/benchmarks.md."""
