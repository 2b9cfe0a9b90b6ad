"""Windows: series, sketches, the figures of a window, and the event-time aggregator."""
