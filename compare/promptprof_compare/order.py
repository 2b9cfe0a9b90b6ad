"""The order in which ``promptprof ci`` makes the base and the candidate calls.

A provider that gets slower (or faster) during a run must not look like a regression: the
default, :func:`blocked_order`, pairs each base call with the candidate call of the same
(prompt, dataset item, repetition) into a block of two, shuffles the blocks and the two calls of
each block, so drift over the run hits both sides alike and each pair runs side by side.
:func:`sequential_order` is the old order, every base call then every candidate call.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

Side = Literal[0, 1]
"""0 for the base run, 1 for the candidate run."""
Slot = tuple[Side, int]
"""A call to make: its side and its index in that side's list of requests."""
OrderName = Literal["blocked", "sequential"]
BASE: Side = 0
CANDIDATE: Side = 1


def sequential_order(base: Sequence[Hashable], candidate: Sequence[Hashable]) -> list[Slot]:
    """Every base call in its order, then every candidate call."""
    return [(BASE, index) for index in range(len(base))] + [
        (CANDIDATE, index) for index in range(len(candidate))
    ]


def blocked_order(base: Sequence[Hashable], candidate: Sequence[Hashable], seed: int) -> list[Slot]:
    """Base and candidate calls with equal keys in blocks; blocks and calls within them shuffled.

    ``base`` and ``candidate`` are the keys of each side's calls; a key found on one side only
    makes a block of its own. The order is a function of the keys and ``seed`` alone.
    """
    blocks: dict[tuple[Hashable, int], list[Slot]] = {}
    seen: Counter[tuple[Side, Hashable]] = Counter()
    for side, keys in ((BASE, base), (CANDIDATE, candidate)):
        for index, key in enumerate(keys):
            occurrence = seen[side, key]  # a repeated key pairs with the other side's in turn
            seen[side, key] += 1
            blocks.setdefault((key, occurrence), []).append((side, index))
    rng = random.Random(seed)
    shuffled = list(blocks.values())
    rng.shuffle(shuffled)
    for block in shuffled:
        rng.shuffle(block)
    return [slot for block in shuffled for slot in block]


def call_order(
    name: OrderName, base: Sequence[Hashable], candidate: Sequence[Hashable], seed: int
) -> list[Slot]:
    """The order named ``name`` (``seed`` is used by the blocked order only)."""
    if name == "sequential":
        return sequential_order(base, candidate)
    return blocked_order(base, candidate, seed)
