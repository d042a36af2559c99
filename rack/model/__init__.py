"""Pure data of the rack: fluxMsg, identifiers, scenarios."""

from rack.model.fluxmsg import MAX_BYTES, MAX_HOPS, FluxMsg, Hop
from rack.model.ids import EntityId, EntityType, FluxIdGenerator, parse_flux_id

__all__ = [
    "MAX_BYTES",
    "MAX_HOPS",
    "EntityId",
    "EntityType",
    "FluxIdGenerator",
    "FluxMsg",
    "Hop",
    "parse_flux_id",
]
