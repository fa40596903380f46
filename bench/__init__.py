"""Benchmarks of the generation core against the fake image API (see ``bench/README.md``)."""
