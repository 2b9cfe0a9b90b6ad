"""Fixtures of the dashboard tests: ``filled``, a database filled by the real pipeline."""

from __future__ import annotations

import pytest

from dashboards.filled import ALL_WIDTHS_S, FilledDatabase, filled_database, with_retention
from promptprof_processor.dashboards.widths import WindowLayout
from promptprof_tools.stack import InfluxDB, TansuBroker


@pytest.fixture(scope="session")
def filled(
    kafka_broker: TansuBroker, influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory
) -> FilledDatabase:
    """The session's InfluxDB database filled by producer -> worker -> sink (made once)."""
    return filled_database(kafka_broker, influxdb, tmp_path_factory.mktemp("filled"))


@pytest.fixture(scope="session")
def retained(filled: FilledDatabase) -> tuple[FilledDatabase, WindowLayout]:
    """The filled data laid out in one retention policy per width, and that layout."""
    database, policies = with_retention(filled)
    return database, WindowLayout(ALL_WIDTHS_S, policies)


@pytest.fixture(params=["default policy", "retention per width"])
def deployment(request: pytest.FixtureRequest,
               filled: FilledDatabase) -> tuple[FilledDatabase, WindowLayout]:
    """The filled data and the dashboards' layout: every width in the default policy, or each
    in its own retention policy."""
    if request.param == "default policy":
        return filled, WindowLayout(ALL_WIDTHS_S)
    retained: tuple[FilledDatabase, WindowLayout] = request.getfixturevalue("retained")
    return retained
