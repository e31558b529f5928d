"""`tapsim backoffice run`: the transaction core's MQTT side (see backoffice/README.md).

``loop`` is the consumer itself, ``gate`` turns a message into what the core takes, ``downlink``
keeps the deny list and fare version validators are sent, ``link`` is the broker connection.
"""

from backoffice.consumer.loop import Consumer, ConsumerConfig, ConsumerStats

__all__ = ["Consumer", "ConsumerConfig", "ConsumerStats"]
