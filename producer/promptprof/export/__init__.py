"""Exporters: where the producer's batching engine hands the call events it built.

As in the OpenTelemetry SDK, a batching engine (:class:`promptprof._sender.Sender`) sits behind
the profiler and exporters sit behind a protocol (:class:`Exporter`): :class:`KafkaExporter`
publishes to the calls topic, :class:`SpoolingExporter` wraps it with the disk spool, and
:class:`promptprof.testing.InMemoryExporter` keeps the events for a test.
"""

from __future__ import annotations

from promptprof._config import Settings
from promptprof.export._base import Cycle, Exporter, ExportStats
from promptprof.export._kafka import KafkaExporter
from promptprof.export._spooling import SpoolingExporter

__all__ = [
    "Cycle",
    "ExportStats",
    "Exporter",
    "KafkaExporter",
    "SpoolingExporter",
    "default_exporter",
]


def default_exporter(settings: Settings) -> Exporter:
    """The Kafka exporter, wrapped by the disk spool when ``producer.spool_dir`` is set."""
    kafka = KafkaExporter(settings)
    producer = settings.producer
    if producer.spool_dir is None:
        return kafka
    return SpoolingExporter(
        kafka, producer.spool_dir, producer.spool_max_bytes, producer.spool_after_s
    )
