"""Benchmarks that print figures, never pass/fail on time. Run them all: ``python -m bench``."""
