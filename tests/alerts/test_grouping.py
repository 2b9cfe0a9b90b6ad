"""Storm grouping and rate limits: the pure grouper, the limiter, and Retry-After through it."""

from __future__ import annotations

import itertools
import math

import httpx
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from promptprof_processor.alerts import Alert, GroupingSettings, ReceiverSettings, RetryPolicy
from promptprof_processor.alerts.grouping import Grouper, Limiter, Notification
from promptprof_processor.alerts.webhooks import Receiver, WebhookSender, render

from .conftest import sample_alerts

BASE = sample_alerts()[0]


def alert(i: int, service: str = "svc", state: str = "firing") -> Alert:
    series = BASE.series.model_copy(update={"service": service, "prompt_id": f"p{i}"})
    return BASE.model_copy(update={"series": series, "alert_id": f"id-{service}-{i}-{state}",
                                   "state": state, "message": f"series {i}"})


arrivals = st.lists(
    st.tuples(st.floats(0, 1000), st.sampled_from(["a", "b", "c"]),
              st.sampled_from(["firing", "resolved"])),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(arrivals, st.floats(0, 60), st.floats(0, 600), st.integers(1, 5))
def test_every_alert_goes_out_once_no_earlier_than_its_group_allows(
    given_arrivals: list[tuple[float, str, str]], wait: float, interval: float, size: int
) -> None:
    grouping = GroupingSettings(group_by=["service"], group_wait_s=wait,
                                group_interval_s=interval, max_alerts=size)
    grouper = Grouper(grouping)
    sent: list[tuple[float, Notification]] = []
    first_seen: dict[tuple[str, str], float] = {}
    alerts = []
    for i, (at, service, state) in enumerate(sorted(given_arrivals)):
        sent += [(at, n) for n in grouper.due(at)]
        a = alert(i, service, state)
        alerts.append(a)
        first_seen.setdefault((state, service), at)
        grouper.add(a, at)
    sent += [(math.inf, n) for n in grouper.due(math.inf)]
    assert grouper.waiting == 0
    delivered = [a.alert_id for _, n in sent for a in n.alerts]
    assert sorted(delivered) == sorted(a.alert_id for a in alerts), "each alert exactly once"
    by_group: dict[str, list[float]] = {}
    for at, note in sent:
        assert len(note.alerts) <= size
        assert {a.state for a in note.alerts} == {note.state}
        assert {a.series.service for a in note.alerts} == {note.group_labels["service"]}
        key = (note.state, note.group_labels["service"])
        assert at >= first_seen[key] + wait
        by_group.setdefault(note.group_key, []).append(at)
    for times in by_group.values():
        distinct = sorted(set(times))
        assert all(b - a >= interval for a, b in itertools.pairwise(distinct)
                   if b != math.inf)


def test_a_storm_of_500_series_is_one_notification_listing_every_series() -> None:
    grouper = Grouper(GroupingSettings())
    for i in range(500):
        grouper.add(alert(i), now=i * 0.01)  # all within 5 s, inside the 10 s group wait
    assert grouper.due(9.0) == []
    (note,) = grouper.due(10.0)
    assert len(note.alerts) == 500
    receiver = Receiver.resolve(ReceiverSettings(name="s", format="slack", url="http://h.ex/x"))
    text = orjson.loads(render(receiver, note, 3600.0))["text"]
    assert all(f"series {i}\n" in text + "\n" for i in range(500))


def test_a_group_notified_waits_the_interval_and_an_idle_one_is_forgotten() -> None:
    grouper = Grouper(GroupingSettings(group_wait_s=10, group_interval_s=300))
    grouper.add(alert(1), 0.0)
    assert len(grouper.due(10.0)) == 1
    grouper.add(alert(2), 20.0)
    assert grouper.due(309.0) == [] and grouper.next_due() == 310.0
    assert len(grouper.due(310.0)) == 1
    assert grouper.due(610.0) == []  # nothing new for an interval: forgotten
    grouper.add(alert(3), 700.0)
    assert grouper.next_due() == 710.0, "a new storm waits group_wait again"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_the_limiter_spaces_sends_and_counts_the_waits() -> None:
    clock = FakeClock()
    limiter = Limiter(1.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(5):
        await limiter.acquire()
        times.append(clock.now)
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0] and limiter.waits == 4
    limiter.defer(30.0)
    await limiter.acquire()
    assert clock.now == 34.0


async def test_retry_after_holds_back_every_send_of_the_receiver() -> None:
    answers = iter([429, 200, 200])
    seen: list[float] = []
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(clock.now)
        status = next(answers)
        return httpx.Response(status, headers={"Retry-After": "20"}, stream=httpx.ByteStream(b""))

    policy = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=60.0)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = WebhookSender(policy, client=client, sleep=clock.sleep)
    limiter = Limiter(1.0, clock=clock, sleep=clock.sleep)
    receiver = Receiver.resolve(ReceiverSettings(name="r", url="http://h.example/x"))
    first = await sender.deliver(receiver, alert(1), limiter)
    second = await sender.deliver(receiver, alert(2), limiter)
    await client.aclose()
    assert first.ok and first.attempts == 2 and second.ok
    assert seen == [0.0, 20.0, 21.0]


def test_receivers_are_rate_limited_by_format_unless_told() -> None:
    def rate(**given: object) -> float:
        return ReceiverSettings(name="r", url="http://h.example/x", **given).rate()  # type: ignore[arg-type]

    assert rate(format="slack") == 1.0
    assert rate(format="generic") == rate(format="alertmanager") == 10.0
    assert rate(format="slack", max_per_s=0.2) == 0.2
