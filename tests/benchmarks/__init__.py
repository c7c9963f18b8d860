"""Benchmarks: speed figures printed beside a baseline measured in the same run.

Run them all with ``python -m tests.benchmarks`` (or some: ``python -m tests.benchmarks
keystore``), or one module with ``python -m tests.benchmarks.bench_keystore``. A benchmark is a
module named ``bench_<topic>.py`` with ``run() -> list[Result]`` (see ``report``); the name
keeps pytest from collecting it: a test asserts behaviour, a benchmark reports speed.
"""
