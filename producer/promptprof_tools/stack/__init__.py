"""The local stack: Tansu (Kafka) and InfluxDB 1.x as processes, topics, and the CLI manager."""

from promptprof_tools.stack.influxdb import INFLUXD_INSTALL_HINT, InfluxDB, influxd_binary
from promptprof_tools.stack.manager import LocalStack, stack_command
from promptprof_tools.stack.ports import free_port, free_ports, port_in_use
from promptprof_tools.stack.process import ServiceProcess, StackError, run_sync
from promptprof_tools.stack.tansu import TansuBroker, kafka_ready, tansu_binary
from promptprof_tools.stack.topics import create_topics, ensure_topics, topic_names

__all__ = [
    "INFLUXD_INSTALL_HINT",
    "InfluxDB",
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
