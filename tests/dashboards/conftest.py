"""Fixtures of the dashboard tests: ``filled``, a database filled by the real pipeline."""

from __future__ import annotations

import pytest

from dashboards.filled import FilledDatabase, filled_database
from promptprof_tools.stack import InfluxDB, TansuBroker


@pytest.fixture(scope="session")
def filled(
    kafka_broker: TansuBroker, influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory
) -> FilledDatabase:
    """The session's InfluxDB database filled by producer -> worker -> sink (made once)."""
    return filled_database(kafka_broker, influxdb, tmp_path_factory.mktemp("filled"))
