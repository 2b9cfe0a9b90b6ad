"""Sink: closed windows from the windows topic rendered to line protocol and written to
InfluxDB."""
