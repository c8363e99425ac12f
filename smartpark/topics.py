"""The MQTT topics of the contract (CONTRACT §2) in code: the one place that spells ``park/``.

Readings are ``park/{site}/{asset}/{sensor}``, snapshots ``park/{site}/{asset}``, alarm states (retained)
``park/alarms/{site}/{asset}/{sensor}/{rule}``, service status (retained, with the last will)
``park/_sys/{service}/{instance}``. Collectors that split the load subscribe through the broker's share group
``$share/{group}/park/#``. HJ 212 data loggers have no MQTT topic; their dead letters name ``hj212/{MN}``.

Every other module builds topics with these functions and recognises them with :func:`is_service_topic`,
:func:`sensor_path` and :func:`is_under_root`, so a change of the root is one line here. This module imports
nothing, so that the park model itself can use it.
"""

from __future__ import annotations

ROOT = "park"
ALARM_ROOT = f"{ROOT}/alarms"
SYS_ROOT = f"{ROOT}/_sys"
SUBSCRIPTION = f"{ROOT}/#"
ALARM_SUBSCRIPTION = f"{ALARM_ROOT}/#"
SYS_SUBSCRIPTION = f"{SYS_ROOT}/#"
SHARE_PREFIX = "$share"
HJ212_ROOT = "hj212"


def reading_topic(site: str, asset: str, sensor: str) -> str:
    return f"{ROOT}/{site}/{asset}/{sensor}"


def sensor_topic(key: str) -> str:
    """The reading topic of a sensor addressed as ``site/asset/sensor`` (CONTRACT §1)."""
    return f"{ROOT}/{key}"


def snapshot_topic(site: str, asset: str) -> str:
    return f"{ROOT}/{site}/{asset}"


def alarm_topic(site: str, asset: str, sensor: str, rule: str) -> str:
    return f"{ALARM_ROOT}/{site}/{asset}/{sensor}/{rule}"


def status_topic(service: str, instance: str) -> str:
    return f"{SYS_ROOT}/{service}/{instance}"


def share_subscription(group: str | None, topic: str = SUBSCRIPTION) -> str:
    return f"{SHARE_PREFIX}/{group}/{topic}" if group else topic


def is_shared(topic: str) -> bool:
    """A share-group subscription (``$share/{group}/...``): the broker hands each message to one member."""
    return topic.startswith(SHARE_PREFIX + "/")


def hj212_topic(mn: str | None) -> str:
    """``hj212/<MN>``, or ``hj212/-`` when the packet has no readable MN: the ``topic`` of its dead letters."""
    return f"{HJ212_ROOT}/{mn or '-'}"


def is_under_root(topic: str) -> bool:
    return topic.startswith(ROOT + "/")


def is_service_topic(topic: str) -> bool:
    """Alarm-state and service-status topics live under ``park/`` too but are not readings."""
    return topic.startswith((ALARM_ROOT + "/", SYS_ROOT + "/")) or topic in (ALARM_ROOT, SYS_ROOT)


def sensor_path(topic: str) -> str:
    """What follows the root (``wwtp/effluent/cod`` of ``park/wwtp/effluent/cod``); the topic itself when it
    is not under the root."""
    return topic.removeprefix(ROOT + "/")


def reading_parts(topic: str) -> tuple[str, str, str] | None:
    """``(site, asset, sensor)`` of a topic shaped like a reading topic, else None (the park model decides
    whether the sensor exists)."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == ROOT:
        return parts[1], parts[2], parts[3]
    return None
