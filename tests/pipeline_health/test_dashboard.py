"""The pipeline-health dashboard sits beside the overview and the drill-down, linked both ways.

(Its every query is run against the InfluxDB the real pipeline filled by
``tests/dashboards/test_queries.py``, like the other dashboards'.)"""

from __future__ import annotations

from promptprof_processor.dashboards import BUILDERS


def _links_to(dashboard: dict[str, object], other: dict[str, object]) -> bool:
    links = dashboard["links"]
    assert isinstance(links, list)
    tags = other["tags"]
    assert isinstance(tags, list)
    return any(link["type"] == "dashboards" and set(link["tags"]) <= set(tags)
               for link in links)


def test_health_dashboard_and_the_others_link_each_other() -> None:
    health = BUILDERS["promptprof-health.json"]()
    for name in ("promptprof-overview.json", "promptprof-prompt.json"):
        other = BUILDERS[name]()
        assert _links_to(other, health), name
        assert _links_to(health, other), name


def test_health_dashboard_shows_every_figure_the_issue_names() -> None:
    queries = " ".join(t["query"] for p in BUILDERS["promptprof-health.json"]()["panels"]
                       for t in p.get("targets", []))
    for name in ("lag_records", "lag_s", "events_per_s", "open_series", "checkpoint_age_s",
                 "sink_backlog", "sink_oldest_unwritten_s", "influx_write_failures",
                 "webhook_failed_attempts", "promptprof_dead_letters", "dropped", "sent_events",
                 "buffer_depth", "bytes_held", "spooled_events", "replayed_events", "retries"):
        assert f'"{name}"' in queries, name
