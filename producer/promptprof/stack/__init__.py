"""The local stack: Tansu (Kafka, on memory or on localbucket) and InfluxDB 1.x as processes,
topics, and the CLI manager."""

from promptprof.stack.influxdb import INFLUXD_INSTALL_HINT, InfluxDB, influxd_binary
from promptprof.stack.localbucket import LocalBucket
from promptprof.stack.manager import LocalStack, stack_command
from promptprof.stack.ports import free_port, free_ports, port_in_use
from promptprof.stack.process import ServiceProcess, StackError, run_sync
from promptprof.stack.tansu import TansuBroker, kafka_ready, tansu_binary
from promptprof.stack.topics import create_topics, ensure_topics, topic_names

__all__ = [
    "INFLUXD_INSTALL_HINT",
    "InfluxDB",
    "LocalBucket",
    "LocalStack",
    "ServiceProcess",
    "StackError",
    "TansuBroker",
    "create_topics",
    "ensure_topics",
    "free_port",
    "free_ports",
    "influxd_binary",
    "kafka_ready",
    "port_in_use",
    "run_sync",
    "stack_command",
    "tansu_binary",
    "topic_names",
]
