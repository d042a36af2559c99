"""Standard wires: durable, at-least-once, on NATS JetStream (nats-py); never a home-made broker.

`JetStreamLink` (link.py) is the rack's connection: it sets up the scenario's streams, hands out
`JetStreamOutlet`s (publisher.py) and binds `JetStreamInlet`s (inlet.py) whose messages gears
settle through a `Delivery`; what fails too often lands in the dead-letter stream
(deadletter.py). Names of streams, subjects and consumers are in names.py.
"""

from rack.wires.jetstream.inlet import Deliver, Delivery, JetStreamInlet
from rack.wires.jetstream.link import JetStreamLink
from rack.wires.jetstream.model import DeadLetter, StreamLimits, WireError, WireOptions, nak_delay
from rack.wires.jetstream.names import WireRoute, slug
from rack.wires.jetstream.publisher import JetStreamOutlet, Publisher

__all__ = [
    "DeadLetter",
    "Deliver",
    "Delivery",
    "JetStreamInlet",
    "JetStreamLink",
    "JetStreamOutlet",
    "Publisher",
    "StreamLimits",
    "WireError",
    "WireOptions",
    "WireRoute",
    "nak_delay",
    "slug",
]
