"""The promptprof stream processor: call events to windowed aggregates in InfluxDB."""
