"""Benchmarks shipped with the package (``edgesnn bench ...``, ``benchmarks/*.py``)."""
