"""Exact accounting per window: calls sent against calls counted, window by window.

A window holding fewer calls than were sent in it lost them; one holding more counted some
twice. The two are summed separately over windows and never net out, so a loss cannot hide
behind a duplicate elsewhere. Used by the integration tests and by ``chaos/run.py``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Tally:
    """Calls sent and counted, compared per window (a key such as (series, window start))."""

    sent: int
    counted: float
    lost: float
    duplicated: float
    windows: int  # windows with calls sent or counted
    wrong_windows: int  # windows whose count differs from what was sent in them
    rate: float = 0.0  # calls per second, as the producer paced them (0: not known)

    @property
    def exact(self) -> bool:
        """Whether every window holds exactly the calls sent in it."""
        return self.wrong_windows == 0


def tally_windows(
    sent: Mapping[Key, int], counted: Mapping[Key, float], rate: float = 0.0
) -> Tally:
    """Compare calls ``sent`` with calls ``counted`` per window key (a missing key: none)."""
    differences = [counted.get(key, 0) - sent.get(key, 0) for key in set(sent) | set(counted)]
    return Tally(
        sent=sum(sent.values()),
        counted=sum(counted.values()),
        lost=-sum(d for d in differences if d < 0),
        duplicated=sum(d for d in differences if d > 0),
        windows=len(differences),
        wrong_windows=sum(1 for d in differences if d),
        rate=rate,
    )
