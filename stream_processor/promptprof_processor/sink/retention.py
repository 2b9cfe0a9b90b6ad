"""Retention per window width: which retention policy a line goes to, and the policies' DDL.

With ``retention.enabled``, the ``llm_window`` and ``llm_window_errors`` points of width ``w`` are
written to the retention policy ``promptprof_<w>s`` (the v1 ``/write`` API's ``rp``; on InfluxDB
2.x the DBRP mapping of that name leads to a bucket of its own, with its own retention), every
other point (alerts) to the database's default policy. InfluxDB drops each width's windows when
they are older than its policy's duration; the readers (dashboards, report) read each width from
its policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from promptprof import load_settings
from promptprof_processor.settings import ProcessorSettings, RetentionSettings
from promptprof_processor.sink.lineprotocol import ERRORS_MEASUREMENT, WINDOW_MEASUREMENT

_WIDTH_TAG = re.compile(r",width=(\d+)s[, ]")
_ROUTED = (f"{WINDOW_MEASUREMENT},", f"{ERRORS_MEASUREMENT},")


def quote_ident(name: str) -> str:
    """An InfluxQL identifier (database, retention policy) in double quotes."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def policy_of(line: str, policies: Mapping[int, str]) -> str | None:
    """The retention policy a line goes to (None: the database's default)."""
    if not policies or not line.startswith(_ROUTED):
        return None
    found = _WIDTH_TAG.search(line)
    return policies.get(int(found.group(1))) if found else None


def by_policy(lines: list[str], policies: Mapping[int, str]) -> dict[str | None, list[str]]:
    """The lines grouped by the retention policy each goes to, in order."""
    groups: dict[str | None, list[str]] = {}
    for line in lines:
        groups.setdefault(policy_of(line, policies), []).append(line)
    return groups


def policy_statements(
    database: str, retention: RetentionSettings, policies: Mapping[int, str],
    existing: set[str],
) -> list[str]:
    """``CREATE`` (or, for those in ``existing``, ``ALTER``) statements that give every width's
    policy its configured duration."""
    statements = []
    for width, name in sorted(policies.items()):
        verb = "ALTER" if name in existing else "CREATE"
        statements.append(f"{verb} RETENTION POLICY {quote_ident(name)} ON {quote_ident(database)} "
                          f"DURATION {retention.duration(width)} REPLICATION 1")
    return statements


def ensure_policies(
    query: Callable[[str], list[dict[str, object]]], database: str,
    retention: RetentionSettings, widths_s: list[int],
) -> list[str]:
    """Create or alter the policies of ``widths_s`` through ``query`` (which runs one InfluxQL
    statement and returns its rows); return the statements run."""
    policies = retention.policies(widths_s)
    if not policies:
        return []
    rows = query(f"SHOW RETENTION POLICIES ON {quote_ident(database)}")
    statements = policy_statements(database, retention, policies, {str(r["name"]) for r in rows})
    for statement in statements:
        query(statement)
    return statements


def ensure_configured_policies(query: Callable[[str], list[dict[str, object]]],
                               database: str) -> list[str]:
    """:func:`ensure_policies` for the processor settings of the environment and
    ``PROMPTPROF_CONFIG`` (what ``promptprof stack up`` runs)."""
    settings = load_settings(None, ProcessorSettings)
    return ensure_policies(query, database, settings.retention, settings.windows.all_widths_s)
