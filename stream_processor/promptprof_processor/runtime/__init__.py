"""Runtime: a partition's run (position, windows, alerts, outbox, checkpoint) and the one
adapter that ties it to Faust and Kafka."""
