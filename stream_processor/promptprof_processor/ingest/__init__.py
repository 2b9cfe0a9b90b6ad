"""Ingest: a Kafka record's bytes decoded into envelopes and validated into call columns."""
