"""The collector: every MQTT reading into InfluxDB, acked only once durable (InfluxDB or the disk spool).

Path of a reading: :mod:`smartpark.mqtt` (subscriber, shared with the alert engine) ->
:mod:`collector.service` (decode, batch, write, ack) -> :mod:`collector.spool` (when InfluxDB is away);
:mod:`collector.metrics` counts it all.
"""

from smartpark.mqtt import Message, MqttError, MqttSource

from .service import Batch, Collector, Counters
from .spool import Record, Spool

__all__ = ["Batch", "Collector", "Counters", "Message", "MqttError", "MqttSource", "Record", "Spool"]
