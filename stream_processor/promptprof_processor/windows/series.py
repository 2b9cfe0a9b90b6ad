"""Series identity and bounded cardinality.

A series is (service, prompt id, prompt version, request model) plus the values of the label
dimensions named in configuration (``windows.label_dimensions``), in that order; a missing label
is the empty string. Quality events carry no labels, so their series has empty label values.

Label values come from the calling service and may be unbounded (user ids by mistake), so
:class:`SeriesRegistry` admits at most ``max_series_per_prompt`` distinct series per prompt
(service, prompt id) at a time. Events of further series go to the prompt's overflow series,
whose label values are all ``"__overflow__"`` (one per version and model), and are counted in
:attr:`SeriesRegistry.overflow_events`. A series leaves the registry, freeing its place, once
no open window can hold it any more (see :meth:`SeriesRegistry.expire`). Without label
dimensions there is nothing to cap: versions and models are bounded identifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

OVERFLOW = "__overflow__"

Prompt = tuple[str, str]


class Series(NamedTuple):
    """The identity of one aggregated series."""

    service: str
    prompt_id: str
    prompt_version: str
    model: str
    labels: tuple[str, ...]

    def label_tags(self, dimensions: Sequence[str]) -> dict[str, str]:
        """The non-empty label values by dimension name."""
        return {name: value for name, value in zip(dimensions, self.labels, strict=True) if value}


class SeriesRegistry:
    """Admits series up to a cap per prompt and routes the rest to an overflow series."""

    def __init__(self, label_dimensions: Sequence[str], max_series_per_prompt: int) -> None:
        """Cap each prompt at ``max_series_per_prompt`` series of ``label_dimensions`` values."""
        self._overflow_labels = (OVERFLOW,) * len(label_dimensions)
        self._cap = max_series_per_prompt
        self._last_seen: dict[Prompt, dict[Series, int]] = {}
        self.overflow_events: dict[Prompt, int] = {}
        self._changed: set[Prompt] = set()

    def resolve(self, series: Series, seen_ns: int, events: int) -> Series:
        """The series ``events`` events seen up to ``seen_ns`` are aggregated under."""
        if not self._overflow_labels:
            return series
        prompt = (series.service, series.prompt_id)
        self._changed.add(prompt)
        known = self._last_seen.setdefault(prompt, {})
        last = known.get(series)
        if last is not None or len(known) < self._cap:
            known[series] = seen_ns if last is None else max(last, seen_ns)
            return series
        self.overflow_events[prompt] = self.overflow_events.get(prompt, 0) + events
        return series._replace(labels=self._overflow_labels)

    def expire(self, before_ns: int) -> None:
        """Forget series last seen before ``before_ns``, freeing their places."""
        for prompt, known in list(self._last_seen.items()):
            for series in [s for s, seen in known.items() if seen < before_ns]:
                del known[series]
                self._changed.add(prompt)
            if not known:
                del self._last_seen[prompt]

    def series_count(self, service: str, prompt_id: str) -> int:
        """How many series of a prompt are admitted now."""
        return len(self._last_seen.get((service, prompt_id), {}))

    def changes(self) -> list[list[Any]]:
        """The entries of the prompts whose series changed since the last call, for
        :meth:`apply`: ``[service, prompt id, overflow events, [[version, model, labels,
        last seen], ...]]`` each (no series: the prompt left the registry)."""
        changed, self._changed = self._changed, set()
        return [self._entry(prompt) for prompt in changed]

    def snapshot(self) -> list[list[Any]]:
        """Every prompt's entry, in the form of :meth:`changes`."""
        return [self._entry(prompt) for prompt in self._last_seen.keys() | self.overflow_events]

    def _entry(self, prompt: Prompt) -> list[Any]:
        known = self._last_seen.get(prompt, {})
        return [*prompt, self.overflow_events.get(prompt, 0),
                [[s.prompt_version, s.model, list(s.labels), seen] for s, seen in known.items()]]

    def apply(self, entries: list[list[Any]]) -> None:
        """Replace the entries of the prompts in ``entries`` (from :meth:`changes`)."""
        for service, prompt_id, overflow, series in entries:
            prompt = (service, prompt_id)
            self._last_seen.pop(prompt, None)
            self.overflow_events.pop(prompt, None)
            if overflow:
                self.overflow_events[prompt] = overflow
            for version, model, labels, seen in series:
                key = Series(service, prompt_id, version, model, tuple(labels))
                self._last_seen.setdefault(prompt, {})[key] = seen
