"""Prompt profile comparison for CI: run suites, compare runs, report regressions."""
