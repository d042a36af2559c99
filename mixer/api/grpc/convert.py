"""The registry's, store's, activation log's and gear catalogue's values as `fluxrig.v1`
messages (None becomes the field's zero value: "", 0 or an unset timestamp)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mixer.activations import ActivationRecord, RackProvenance
from mixer.api.grpc.proto import gears_pb2, racks_pb2, store_pb2, struct_pb2, timestamp_pb2
from mixer.registry import RackRecord
from mixer.rollout import RackOutcome
from mixer.store import Blob, Ref
from rack.gear.docs import config_schema
from rack.gear.registry import AnyGear


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp (converted to UTC)."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a Struct (numbers become doubles, as in JSON)."""
    out = struct_pb2.Struct()
    out.update(dict(value))
    return out


def rack(rec: RackRecord) -> racks_pb2.Rack:
    msg = racks_pb2.Rack(
        name=rec.name,
        entity_id=rec.entity_id,
        machine_id=rec.machine_id,
        status=rec.status.value,
        adopted=rec.adopted,
        version=rec.version or "",
        attributes=struct(rec.attributes),
        stats=struct(rec.stats),
        created_at=timestamp(rec.created_at),
        updated_at=timestamp(rec.updated_at),
    )
    if rec.last_seen is not None:
        msg.last_seen.CopyFrom(timestamp(rec.last_seen))
    return msg


def stored_ref(ref: Ref) -> store_pb2.StoredRef:
    return store_pb2.StoredRef(
        kind=ref.kind,
        name=ref.name,
        tag=ref.tag,
        digest=ref.digest,
        size=ref.size,
        created_at=timestamp(ref.created_at),
    )


def blob_ref(blob: Blob, entry: Ref | None) -> store_pb2.StoredRef:
    """The StoredRef of a fetched blob: its index entry when known (fetched by name), else only
    kind, digest and size (fetched by digest)."""
    if entry is not None:
        return stored_ref(entry)
    return store_pb2.StoredRef(
        kind=blob.kind,
        name=blob.name or "",
        tag=blob.tag or "",
        digest=blob.digest,
        size=len(blob.data),
    )


def activation(rec: ActivationRecord) -> store_pb2.Activation:
    msg = store_pb2.Activation(
        id=rec.id,
        ref=rec.ref or "",
        digest=rec.digest,
        scenario=rec.scenario,
        state=rec.state,
        requested_at=timestamp(rec.requested_at),
        error=rec.error or "",
        previous=rec.previous or 0,
    )
    if rec.finished_at is not None:
        msg.finished_at.CopyFrom(timestamp(rec.finished_at))
    return msg


def outcome(o: RackOutcome) -> store_pb2.RackOutcome:
    return store_pb2.RackOutcome(
        rack=o.rack, state=o.state, error=o.error or "", report=o.report or ""
    )


def provenance(row: RackProvenance, active: ActivationRecord | None) -> store_pb2.Provenance:
    msg = store_pb2.Provenance(
        rack=row.rack,
        digest=row.digest or "",
        applied=active is not None and row.digest == active.digest,
        error=row.last_error or "",
        ref=row.ref or "",
        activation=row.activation or 0,
        last_activation=row.last_activation,
        last_digest=row.last_digest or "",
        last_state=row.last_state,
        pushed_at=timestamp(row.pushed_at),
    )
    if row.since is not None:
        msg.since.CopyFrom(timestamp(row.since))
    return msg


def gear(type_name: str, g: AnyGear) -> gears_pb2.Gear:
    return gears_pb2.Gear(
        type=type_name,
        summary=g.summary,
        inputs=list(g.inputs),
        outputs=list(g.outputs),
        config_schema_json=json.dumps(config_schema(g), sort_keys=True),
    )
