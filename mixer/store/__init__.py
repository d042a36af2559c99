"""The mixer's content-addressed store (CAS) for scenarios and specs.

Immutable SHA-256 blobs on disk, indexed `kind → name → tag → digest` in DuckDB. References:
`name:tag`, `name:latest` / bare `name` (highest SemVer tag), `sha256:<hex>`.
"""

from mixer.store.cas import Blob, CasStore, PutResult
from mixer.store.index import Ref
from mixer.store.refs import KINDS, LATEST, Kind, digest_of, parse_ref, semver_of

__all__ = [
    "KINDS",
    "LATEST",
    "Blob",
    "CasStore",
    "Kind",
    "PutResult",
    "Ref",
    "digest_of",
    "parse_ref",
    "semver_of",
]
