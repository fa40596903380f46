"""Reference images for tests/test_charts.py; ``python -m tests.snapshots.regenerate`` draws them again."""
