"""The rack registry: who is in the cluster, with which MachineID, in which status.

`Registry` wraps the `registry` table of the mixer's DuckDB database (seed: identity & registry);
`RackRecord` is one row; the status rules are documented in `mixer.registry.model`.
"""

from mixer.migrations import Migration, apply_migrations, current_version
from mixer.registry.model import RackRecord, RackStatus
from mixer.registry.registry import Clock, NamedAdoption, Registry

__all__ = [
    "Clock",
    "Migration",
    "NamedAdoption",
    "RackRecord",
    "RackStatus",
    "Registry",
    "apply_migrations",
    "current_version",
]
