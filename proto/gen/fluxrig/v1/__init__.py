"""fluxrig API v1 (generated from proto/fluxrig/v1)."""
