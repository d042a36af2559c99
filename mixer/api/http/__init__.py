"""The mixer's REST API (aiohttp) under `/api/v1`, with its OpenAPI document.

    from mixer.api.http import ApiContext, build_app
    app = build_app(ApiContext(store=..., registry=..., gears=..., auth_token=token))

Every operation needs `Authorization: Bearer <token>` except `GET /api/v1/health` and
`GET /api/v1/openapi.json`; `auth_token=None` runs without authentication (insecure mode).
"""

from mixer.api.http.app import OPERATIONS, build_app
from mixer.api.http.context import DEFAULT_MAX_BODY_BYTES, ApiContext, TapAccess
from mixer.api.http.operation import API_PREFIX, Operation

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY_BYTES",
    "OPERATIONS",
    "ApiContext",
    "Operation",
    "TapAccess",
    "build_app",
]
