"""The rack runtime: one TaskGroup per rack, one supervised slot per gear."""

from rack.runtime.rack import ApplyReport, Rack

__all__ = ["ApplyReport", "Rack"]
