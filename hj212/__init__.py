"""HJ 212 data loggers (HJ 212-2017 and HJ 212-2025, and HJ/T 212-2005 packets) as an input of smartpark.

Path of a packet: :mod:`hj212.frame` (``##`` length, CRC, CRLF on the TCP stream) -> :mod:`hj212.packet`
(fields) -> :mod:`hj212.crypto` (SM4 CP) -> :mod:`hj212.decode` (points, validated like MQTT readings) ->
:mod:`hj212.service` (the collector's write path, :mod:`hj212.feed` to the alarm engine, then the 9014
acknowledgement); :mod:`hj212.simulate` drives the park's loggers from the simulators.
"""

from .decode import Logger, LoggerMap, PacketDecoder, Points
from .frame import Frame, FrameError, FrameReader, crc16, frame
from .packet import Packet, PacketError, encode, parse

__all__ = ["Frame", "FrameError", "FrameReader", "Logger", "LoggerMap", "Packet", "PacketDecoder", "PacketError",
           "Points", "crc16", "encode", "frame", "parse"]
