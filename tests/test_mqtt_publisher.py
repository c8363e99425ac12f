"""The publisher of smartpark.mqtt (the simulators' bulk traffic, the alarm engine's retained states) against a
real Mosquitto, with MQTT 5 and 3.1.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest

from smartpark.config import parse_mqtt_url
from smartpark.mqtt import MQTT5, MQTT311, MqttSource, Publisher


async def _received(src: MqttSource, n: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(20):
        while len(got) < n:
            batch = await src.take(10_000, 0.2)
            src.ack(batch)
            got += batch
    return got


@pytest.mark.parametrize("version", [MQTT5, MQTT311])
class TestPublish:
    def test_the_await_returns_once_pubacked_with_many_in_flight(self, broker: Any, version: int) -> None:
        """Concurrent ``publish`` calls share the connection: up to ``window`` are in flight at once, each await
        returns after its PUBACK, and the subscriber receives every message once."""
        async def go() -> None:
            target = parse_mqtt_url(broker.url)
            async with MqttSource(target, f"sub-{version}", "park/pubtest/#", clean_start=True,
                                  session_expiry=0, protocol=version) as src:
                stop = asyncio.Event()
                run = asyncio.create_task(src.run(stop))
                await asyncio.wait_for(src.connected.wait(), 10)
                async with Publisher(target, f"pub-{version}", protocol=version, window=50) as pub:
                    tasks = [asyncio.create_task(pub.publish(f"park/pubtest/{i}", b"%d" % i)) for i in range(300)]
                    await asyncio.sleep(0)  # every task has written what the window lets through
                    assert len(pub.unacked()) == 50
                    await asyncio.wait_for(asyncio.gather(*tasks), 30)
                    assert pub.unacked() == [] and pub.acknowledged == 300 and pub.refused == 0
                got = await _received(src, 300)
                assert sorted(int(m.payload) for m in got) == list(range(300))
                assert {m.topic for m in got} == {f"park/pubtest/{i}" for i in range(300)}
                stop.set()
                await run
        asyncio.run(go())

    def test_a_retained_publish_reaches_a_later_subscriber(self, broker: Any, version: int) -> None:
        """``retain=True`` is kept by the broker: a subscriber that comes after the PUBACK still gets it."""
        async def go() -> None:
            target = parse_mqtt_url(broker.url)
            async with Publisher(target, f"pub-r-{version}", protocol=version) as pub:
                await pub.publish("park/alarms/pubtest", b'{"state": "UNACK"}', retain=True)
                await pub.publish("park/alarms/other", b"not retained", qos=0)
            async with MqttSource(target, f"late-{version}", "park/alarms/#", clean_start=True, session_expiry=0,
                                  protocol=version) as src:
                stop = asyncio.Event()
                run = asyncio.create_task(src.run(stop))
                got = await _received(src, 1)
                assert [(m.topic, m.payload) for m in got] == [("park/alarms/pubtest", b'{"state": "UNACK"}')]
                stop.set()
                await run
        asyncio.run(go())

    def test_a_lost_connection_fails_every_waiting_publish(self, broker: Any, version: int) -> None:
        """When the broker dies, each publish still waiting raises ConnectionError (none hangs), what was not
        acknowledged is listed for a resend, and a later publish fails at once."""
        async def go() -> None:
            async with Publisher(parse_mqtt_url(broker.url), f"pub-k-{version}", protocol=version,
                                 window=20) as pub:
                tasks = [asyncio.create_task(pub.publish(f"park/pubtest/{i}", b"x" * 100)) for i in range(200)]
                await asyncio.sleep(0)
                broker.stop(kill=True)
                async with asyncio.timeout(20):
                    results = await asyncio.gather(*tasks, return_exceptions=True)
                failed = [r for r in results if r is not None]
                assert failed and all(isinstance(r, ConnectionError) for r in failed)
                assert pub.acknowledged + len(failed) == 200
                failed_topics = {f"park/pubtest/{i}" for i, r in enumerate(results) if r is not None}
                assert len(pub.unacked()) <= 20 and {t for t, _ in pub.unacked()} <= failed_topics
                with pytest.raises(ConnectionError):
                    await pub.publish("park/pubtest/after", b"x")
        asyncio.run(go())


class TestSubmit:
    """``submit`` from a callback: one future per group of QoS 1 messages, settled by the last PUBACK (None), a
    lost connection or the deadline (the error as its result) (3.1.1, as ``hj212 serve``'s engine feed uses it)."""

    def test_each_group_resolves_once_all_its_messages_are_acknowledged(self, broker: Any) -> None:
        """500 groups of three submitted in one loop iteration: every future resolves, the subscriber gets
        all 1,500 messages once, and nothing is left in flight."""
        async def go() -> None:
            target = parse_mqtt_url(broker.url)
            async with MqttSource(target, "sub-groups", "park/grptest/#", clean_start=True, session_expiry=0,
                                  protocol=MQTT311) as src:
                stop = asyncio.Event()
                run = asyncio.create_task(src.run(stop))
                await asyncio.wait_for(src.connected.wait(), 10)
                async with Publisher(target, "pub-groups", protocol=MQTT311, window=60_000) as pub:
                    deadline = asyncio.get_running_loop().time() + 30
                    futs = [pub.submit([(f"park/grptest/{g}/{k}", b"%d" % k) for k in range(3)], deadline)
                            for g in range(500)]
                    assert not any(f.done() for f in futs) and len(pub.unacked()) == 1500
                    assert await asyncio.wait_for(asyncio.gather(*futs), 30) == [None] * 500
                    assert pub.unacked() == [] and pub.acknowledged == 1500 and pub.groups_failed == 0
                got = await _received(src, 1500)
                assert len({m.topic for m in got}) == 1500
                stop.set()
                await run
        asyncio.run(go())

    def test_deadline_and_lost_connection_fail_the_group(self, broker: Any) -> None:
        """A broker that stops answering: the group ends with TimeoutError at its deadline and leaves the
        window; the broker killed: the groups in flight end with ConnectionError, and submit raises."""
        async def go() -> None:
            async with Publisher(parse_mqtt_url(broker.url), "pub-dl", protocol=MQTT311) as pub:
                pid = broker.pid
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
                try:
                    loop = asyncio.get_running_loop()
                    late = pub.submit([("park/grptest/a", b"1"), ("park/grptest/b", b"2")], loop.time() + 0.3)
                    assert isinstance(await asyncio.wait_for(late, 10), TimeoutError)
                    assert pub.unacked() == [] and pub.groups_failed == 1
                    lost = pub.submit([("park/grptest/c", b"3")])
                    await asyncio.sleep(0.05)
                    broker.stop(kill=True)  # still stopped: it never acknowledges "c"
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                assert isinstance(await asyncio.wait_for(lost, 20), ConnectionError)
                with pytest.raises(ConnectionError):
                    pub.submit([("park/grptest/d", b"4")])
        asyncio.run(go())
