"""The alert engine's state of one partition, as small entries that checkpoint one by one.

A partition's state is a set of entries, each a stable bytes key and a small orjson value:

``s\\x1f<series key>``
    one series (its tags, window width, version): the baselines of its anomaly metrics, the
    hysteresis state of each of its rules and, while a rule is bad or firing, the values that
    rule's baseline did not learn (kept to become the new baseline if the shift is accepted).
    Its size is bounded by the rules: about ``(metrics + 1) * baseline_windows * 11`` bytes plus
    ``rules * baseline_windows * 11`` while firing (about 2.5 KB with the defaults, at most 5 KB).
``i\\x1f<incident key>``
    one incident (a rule of a series across window widths): the widths firing, its start and its
    last notification. A few dozen bytes.
``b\\x1f<prompt key>`` / ``c\\x1f<prompt key>``
    a prompt's error-budget burn state and spend state (:mod:`.budgets`): bucketed counts over
    the longest burn window (at most :data:`~.budgets.MAX_BUCKETS` buckets per burn window) and
    the period's spend. At most a few KB.

:class:`PartitionState` records which entries changed since :meth:`PartitionState.changed` was
last called, so a checkpoint writes only what moved; a deleted entry is reported as ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from promptprof_processor.alerts.baseline import Baseline, Method, make_baseline, pack, unpack
from promptprof_processor.alerts.rules import AnomalyRules

SERIES = b"s\x1f"
INCIDENT = b"i\x1f"
BURN = b"b\x1f"
SPEND = b"c\x1f"
BLOB_TAG = b"PPAS2\n"  # state_bytes(): every entry in one blob
EXPIRE_EVERY_NS = 60 * 1_000_000_000


class Persistent(Protocol):
    """A piece of state that turns into an entry's value."""

    last_ns: int

    def to_state(self) -> Any:
        """JSON-native state."""


@dataclass(slots=True)
class RuleState:
    """The hysteresis state of one rule on one series (one window width)."""

    firing: bool = False
    bad: int = 0
    good: int = 0
    started_ns: int = 0
    held: list[float] = field(default_factory=list)  # values not learned while bad or firing

    @property
    def troubled(self) -> bool:
        """Bad windows in a row, or firing: the baseline does not learn."""
        return self.firing or self.bad > 0

    def hold(self, value: float, limit: int) -> None:
        """Keep a value the baseline did not learn (the last ``limit`` of them)."""
        self.held.append(value)
        del self.held[:-limit]

    def to_state(self) -> list[Any]:
        """JSON-native state."""
        return [self.firing, self.bad, self.good, self.started_ns, pack(self.held)]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> RuleState:
        """Restore from :meth:`to_state` output."""
        firing, bad, good, started_ns, held = state
        return cls(bool(firing), int(bad), int(good), int(started_ns), list(unpack(held)))


@dataclass(slots=True)
class SeriesState:
    """Baselines and rule states of one series."""

    prompt_id: str
    family: str
    version: str
    method: Method
    baselines: dict[str, Baseline] = field(default_factory=dict)
    rules: dict[str, RuleState] = field(default_factory=dict)
    own_windows: int = 0
    seeded_from: str | None = None
    last_ns: int = 0

    def to_state(self) -> dict[str, Any]:
        """JSON-native state."""
        return {
            "prompt_id": self.prompt_id,
            "family": self.family,
            "version": self.version,
            "method": self.method,
            "baselines": {name: b.to_state() for name, b in self.baselines.items()},
            "rules": {rule: r.to_state() for rule, r in self.rules.items()},
            "own_windows": self.own_windows,
            "seeded_from": self.seeded_from,
            "last_ns": self.last_ns,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], anomaly: AnomalyRules) -> SeriesState:
        """Restore from :meth:`to_state` output; baselines of another method are dropped."""
        same = state["method"] == anomaly.method
        size = anomaly.baseline_windows
        return cls(
            prompt_id=state["prompt_id"],
            family=state["family"],
            version=state["version"],
            method=anomaly.method,
            baselines={
                name: make_baseline(anomaly.method, size, b)
                for name, b in (state["baselines"].items() if same else ())
            },
            rules={rule: RuleState.from_state(r) for rule, r in state["rules"].items()},
            own_windows=state["own_windows"],
            seeded_from=state["seeded_from"],
            last_ns=state["last_ns"],
        )


@dataclass(slots=True)
class Incident:
    """A rule of one series across window widths: one firing, one resolution for receivers."""

    widths: list[int] = field(default_factory=list)  # widths firing now
    started_ns: int = 0
    notified: bool = False
    notified_ns: int = 0
    last_ns: int = 0

    def to_state(self) -> list[Any]:
        """JSON-native state."""
        return [self.widths, self.started_ns, self.notified, self.notified_ns, self.last_ns]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> Incident:
        """Restore from :meth:`to_state` output."""
        widths, started_ns, notified, notified_ns, last_ns = state
        return cls([int(w) for w in widths], int(started_ns), bool(notified), int(notified_ns),
                   int(last_ns))


class PartitionState:
    """Every entry of one partition, and which changed since the last :meth:`changed`."""

    def __init__(self) -> None:
        """An empty partition."""
        self.series: dict[str, SeriesState] = {}
        self.incidents: dict[str, Incident] = {}
        self.budgets: dict[bytes, Persistent] = {}  # burn and spend states by entry key
        self.newest_ns = 0  # the end of the newest window observed
        self._expired_ns = -EXPIRE_EVERY_NS  # when expire() last looked
        self._dirty: set[bytes] = set()

    def touch_series(self, key: str) -> None:
        """Mark a series changed."""
        self._dirty.add(SERIES + key.encode())

    def touch_incident(self, key: str) -> None:
        """Mark an incident changed (or deleted)."""
        self._dirty.add(INCIDENT + key.encode())

    def touch_budget(self, key: bytes) -> None:
        """Mark a burn or spend state changed."""
        self._dirty.add(key)

    def entry(self, key: bytes) -> bytes | None:
        """The current value of entry ``key`` (None: it does not exist)."""
        found: Persistent | None
        if key.startswith(SERIES):
            found = self.series.get(key[len(SERIES):].decode())
        elif key.startswith(INCIDENT):
            found = self.incidents.get(key[len(INCIDENT):].decode())
        else:
            found = self.budgets.get(key)
        return None if found is None else orjson.dumps(found.to_state())

    def keys(self) -> Iterable[bytes]:
        """Every entry's key."""
        yield from (SERIES + k.encode() for k in self.series)
        yield from (INCIDENT + k.encode() for k in self.incidents)
        yield from self.budgets

    def changed(self) -> dict[bytes, bytes | None]:
        """The entries changed since the last call (None: deleted); clears the record."""
        changed = {key: self.entry(key) for key in sorted(self._dirty)}
        self._dirty.clear()
        return changed

    def everything(self) -> dict[bytes, bytes]:
        """Every entry."""
        return {key: value for key in self.keys() if (value := self.entry(key)) is not None}

    def expire(self, ttl_ns: int) -> list[SeriesState]:
        """Drop state idle for more than ``ttl_ns`` before the newest window; return the dropped
        series. Looks at most once per :data:`EXPIRE_EVERY_NS` of event time (it reads every
        entry)."""
        newest = self.newest_ns
        if newest - self._expired_ns < EXPIRE_EVERY_NS:
            return []
        self._expired_ns = newest
        stale_series = {k: s for k, s in self.series.items() if newest - s.last_ns > ttl_ns}
        for key in stale_series:
            del self.series[key]
            self.touch_series(key)
        for key in [k for k, i in self.incidents.items() if newest - i.last_ns > ttl_ns]:
            del self.incidents[key]
            self.touch_incident(key)
        for bkey in [k for k, b in self.budgets.items() if newest - b.last_ns > ttl_ns]:
            del self.budgets[bkey]
            self.touch_budget(bkey)
        return list(stale_series.values())


def pack_entries(entries: Mapping[bytes, bytes]) -> bytes:
    """Entries as one blob: a format tag, then length-prefixed keys and values."""
    parts = [BLOB_TAG]
    for key, value in entries.items():
        parts += [len(key).to_bytes(4, "big"), key, len(value).to_bytes(4, "big"), value]
    return b"".join(parts)


def unpack_entries(blob: bytes) -> dict[bytes, bytes]:
    """The entries of :func:`pack_entries` output; raises ValueError on anything else."""
    if not blob.startswith(BLOB_TAG):
        raise ValueError("not an alert state blob of this format")
    entries: dict[bytes, bytes] = {}
    at = len(BLOB_TAG)
    while at < len(blob):
        key, at = _chunk(blob, at)
        entries[key], at = _chunk(blob, at)
    return entries


def _chunk(blob: bytes, at: int) -> tuple[bytes, int]:
    size = int.from_bytes(blob[at:at + 4], "big")
    end = at + 4 + size
    if size < 0 or end > len(blob) or at + 4 > len(blob):
        raise ValueError("truncated alert state blob")
    return blob[at + 4:end], end

