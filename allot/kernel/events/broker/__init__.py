"""Broker mode of the event bus (RabbitMQ): the outbox relay, the consumer worker, the topology
and the dead-letter queues. Single-process mode (the in-process Dispatcher) needs none of it.
See docs/event-bus.md."""

from allot.kernel.events.broker.relay import Relay
from allot.kernel.events.broker.topology import Topology, consumer_groups
from allot.kernel.events.broker.worker import BrokerWorker

__all__ = ["BrokerWorker", "Relay", "Topology", "consumer_groups"]
