"""The publisher of smartpark.mqtt (the simulators' bulk traffic, the alarm engine's retained states) against a
real Mosquitto, with MQTT 5 and 3.1.1."""

from __future__ import annotations

import asyncio
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
