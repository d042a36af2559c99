"""The mixer's exception tree. Every error the mixer raises on purpose derives from `MixerError`,
which is itself a `rack.errors.FluxError`, so one `except FluxError` catches both programs' errors.

FluxError                     (rack.errors)
└── MixerError                the mixer cannot do what was asked
    ├── StoreError            the CAS store failed (I/O, corrupted blob, broken index)
    │   ├── NotFoundError     no blob/ref matches the reference
    │   ├── ConflictError     name:tag already points at different bytes (tags are immutable)
    │   └── InvalidRefError   a kind, name, tag or reference is malformed
    ├── RegistryError         the rack registry refused or failed an operation
    │   ├── RackNotFoundError         no rack is registered under that name
    │   ├── RackConflictError         name taken, identity mismatch, or illegal status transition
    │   ├── RackNameError             a rack name is malformed
    │   └── MachineIdsExhaustedError  every MachineID (1..65535) is allocated
    ├── MigrationError        a schema migration failed, or the database is newer than this mixer
    ├── PkiError              the cluster PKI refused a file, a CSR or a certificate
    └── ActivationError       a scenario activation did not take the fleet to the new scenario
        └── ActivationFailedError  a rack could not apply it: the fleet is back on the previous one

A scenario that fails pre-flight raises `rack.errors.ScenarioError` (with every problem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rack.errors import FluxError

if TYPE_CHECKING:
    from mixer.rollout import ActivationResult


class MixerError(FluxError):
    """Base of every error the mixer raises on purpose."""


class StoreError(MixerError):
    """The CAS store failed: unreadable or corrupted blob, I/O error, inconsistent index."""


class NotFoundError(StoreError):
    """No stored blob or ref matches the reference (e.g. unknown `name:tag` or `sha256:<hex>`)."""


class ConflictError(StoreError):
    """`name:tag` already points at different bytes; tags are immutable, pick a new tag."""


class InvalidRefError(StoreError):
    """A kind, name, tag or reference string is malformed."""


class RegistryError(MixerError):
    """The rack registry refused or failed an operation."""


class RackNotFoundError(RegistryError):
    """No rack is registered under that name; list racks with `fluxrig racks list`."""


class RackConflictError(RegistryError):
    """The request conflicts with the registry: name taken, identity (public key) mismatch, or a
    status transition that is not allowed from the rack's current status."""


class RackNameError(RegistryError):
    """A rack name is malformed (letters, digits, `_` and `-`, 1..63 characters)."""


class MachineIdsExhaustedError(RegistryError):
    """Every MachineID (1..65535) is allocated; MachineIDs of retired racks are never reused."""


class MigrationError(MixerError):
    """A schema migration failed (rolled back), or the database was written by a newer mixer."""


class PkiError(MixerError):
    """The cluster PKI refused a file, a CSR or a certificate; the message says what to do."""


class ActivationError(MixerError):
    """A scenario activation did not take the fleet to the new scenario."""


class ActivationFailedError(ActivationError):
    """At least one rack could not apply the scenario (or did not answer in time); every rack
    was put back on the previous scenario. `result` says what each rack answered."""

    def __init__(self, message: str, result: ActivationResult) -> None:
        super().__init__(message)
        self.result = result
