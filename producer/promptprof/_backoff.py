"""Exponential backoff, the one retry delay shared by the producer and the worker."""

from __future__ import annotations


class Backoff:
    """Exponential backoff from ``initial`` to ``maximum`` seconds, reset on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        """Delays start at ``initial`` seconds and double up to ``maximum``."""
        self.initial, self.maximum = initial, maximum
        self.current = initial

    def next(self) -> float:
        """The delay to wait now; doubles the next one."""
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.current = self.initial
