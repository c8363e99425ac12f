"""MQTT brokers other than Mosquitto for the interoperability tests: devstack/brokers.py, which the benchmarks
share."""

from devstack.brokers import AedesBroker, AmqttBroker, ExternalBroker, MosquittoWindow, RabbitMqBroker

__all__ = ["AedesBroker", "AmqttBroker", "ExternalBroker", "MosquittoWindow", "RabbitMqBroker"]
