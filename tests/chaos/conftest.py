"""The fast fault cases reuse the processor integration fixtures (a Pipeline per test)."""

from processor_integration.conftest import pipeline_factory, rng

__all__ = ["pipeline_factory", "rng"]
