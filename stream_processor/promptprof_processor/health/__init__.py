"""Pipeline health: the worker's and the producers' self-metrics, their alerts and probes."""
