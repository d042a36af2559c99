"""fluxrig mixer: the control plane (CAS store, registry, enrollment, orchestration, APIs)."""

import os

__version__ = "0.1.0"

# gRPC's fork handlers run in every fork of the process, including the fork + exec of the child
# processes the mixer supervises (nats-server, the local rack), where they log noise and, under
# load, broke a child's exec-failure report to its parent. No child of the mixer uses gRPC.
# Set before anything imports grpc (the variable is read once, at gRPC's initialisation).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
