"""Standard wires: durable, at-least-once, on NATS JetStream (nats-py); never a home-made broker.

`JetStreamLink` (link.py) is the rack's connection: it sets up the scenario's streams, hands out
`JetStreamOutlet`s (publisher.py) and binds `JetStreamInlet`s (inlet.py) whose messages gears
settle through a `Delivery`; what fails too often lands in the dead-letter stream
(deadletter.py). A wire between two racks is forwarded by a `Forwarder` (forward.py) from the
source's rack into the target's stream. Names of streams, subjects and consumers, and the hub
permissions cross-rack wires need (`cross_permissions`), are in names.py.
"""

from rack.wires.jetstream.forward import Forwarder
from rack.wires.jetstream.inlet import Deliver, Delivery, JetStreamInlet
from rack.wires.jetstream.link import JetStreamLink
from rack.wires.jetstream.model import DeadLetter, StreamLimits, WireError, WireOptions, nak_delay
from rack.wires.jetstream.names import CrossPermissions, WireRoute, cross_permissions, slug
from rack.wires.jetstream.publisher import JetStreamOutlet, Publisher

__all__ = [
    "CrossPermissions",
    "DeadLetter",
    "Deliver",
    "Delivery",
    "Forwarder",
    "JetStreamInlet",
    "JetStreamLink",
    "JetStreamOutlet",
    "Publisher",
    "StreamLimits",
    "WireError",
    "WireOptions",
    "WireRoute",
    "cross_permissions",
    "nak_delay",
    "slug",
]
