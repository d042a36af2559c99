"""The rack's link to the mixer: enrollment (hello, heartbeats, status) over the mixer's NATS.

`MixerLink` (rack.link.enrollment) is the rack's side; `rack.link.protocol` defines the subjects
and messages both sides use (the mixer imports it); `rack.link.stats` samples the process figures
a heartbeat carries. The protocol is described in docs/enrollment.md. The Snake (leaf node over
mTLS) and the offline buffer come later in this package.
"""

from rack.link.enrollment import LinkState, MixerLink
from rack.link.protocol import ErrorBody, HelloReply, StatusUpdate

__all__ = ["ErrorBody", "HelloReply", "LinkState", "MixerLink", "StatusUpdate"]
