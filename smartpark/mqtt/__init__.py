"""smartpark's MQTT client: one packet codec (:mod:`.codec`, MQTT 5 and 3.1.1), the subscriber of the
collector and the alarm engine (:class:`MqttSource`, explicit QoS 1 acks) and the publisher of the simulators
and the alarm states (:class:`Publisher`, QoS 1 with many messages in flight)."""

from .codec import MQTT5, MQTT311, RECEIVE_MAXIMUM, SHARED_SUBSCRIPTION_AVAILABLE, Message, Will, protocol_name
from .errors import MqttError, MqttRefused, reason
from .publisher import Publisher
from .subscriber import CONNACK_TIMEOUT, MqttSource

__all__ = [
    "CONNACK_TIMEOUT",
    "MQTT5",
    "MQTT311",
    "RECEIVE_MAXIMUM",
    "SHARED_SUBSCRIPTION_AVAILABLE",
    "Message",
    "MqttError",
    "MqttRefused",
    "MqttSource",
    "Publisher",
    "Will",
    "protocol_name",
    "reason",
]
