"""A small client of the mixer's REST API (`/api/v1`), on the standard library only.

    client = ApiClient.resolve(args.api_url, args.api_token)   # flag > environment > default
    racks = client.get("/racks", {"status": "active"})
    result = client.post("/scenarios", {"tag": "v1", "content": text})
    client.post("/scenarios/pay:v1/activate", timeout=600)   # a slow operation: its own bound
    with client.stream("/racks/edge-1/tap", {"wire": "gen.out"}) as lines:   # NDJSON
        for body in lines: ...

The rack's base install has no aiohttp/requests, so this is `urllib.request` with a timeout,
JSON in and out. Every failure is an `ApiError`: the API's `{"error": {code, message, details}}`
answer becomes its message and located details; an unreachable mixer, a refused token and an
answer that is not the mixer's say so and what to set. The token is sent as
`Authorization: Bearer ...` and never appears in a repr or a message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from rack import __version__
from rack.errors import ApiError, Problem

DEFAULT_API_URL = "http://127.0.0.1:8090"
URL_ENV = "FLUXRIG_API_URL"
TOKEN_ENV = "FLUXRIG_API_TOKEN"
CA_ENV = "FLUXRIG_API_CA"
API_PREFIX = "/api/v1"
WHERE = "--api-url / FLUXRIG_API_URL"
TOKEN_HINT = "set --api-token or FLUXRIG_API_TOKEN"
NDJSON = "application/x-ndjson"
MAX_LINE = 1024 * 1024  # one line of a stream (a tap record is at most 128 KiB)


def segment(value: str) -> str:
    """`value` quoted as one path segment (`name:tag` and `sha256:<hex>` keep their colon)."""
    return urllib.parse.quote(value, safe=":@")


def _tls_context(ca_file: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(f"cannot use {ca_file} as the mixer's CA (--api-ca): {exc}") from exc


class ApiClient:
    """Blocking JSON calls to one mixer; `get`/`post` return the decoded answer."""

    __slots__ = ("_ssl", "_token", "base_url", "timeout")

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10,
        *,
        ca_file: str | None = None,
    ) -> None:
        url = base_url.strip().rstrip("/")
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ApiError(f"the mixer API URL must start with http:// or https://, not {url!r}")
        self.base_url = url.removesuffix(API_PREFIX)
        self._token = token or None
        self.timeout = timeout
        self._ssl = _tls_context(ca_file) if ca_file else None

    @classmethod
    def resolve(
        cls,
        api_url: str | None,
        api_token: str | None,
        timeout: float = 10,
        *,
        api_ca: str | None = None,
    ) -> ApiClient:
        """URL: `api_url` > FLUXRIG_API_URL > http://127.0.0.1:8090; token: `api_token` >
        FLUXRIG_API_TOKEN > none; CA file for https (the mixer's `pki/ca.crt`): `api_ca` >
        FLUXRIG_API_CA > the system's (empty values count as unset)."""
        url = api_url or os.environ.get(URL_ENV) or DEFAULT_API_URL
        ca = api_ca or os.environ.get(CA_ENV) or None
        return cls(url, api_token or os.environ.get(TOKEN_ENV) or None, timeout, ca_file=ca)

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r}, token={'***' if self._token else None})"

    def get(self, path: str, params: Mapping[str, str | None] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self._call("GET", path, None, self.timeout)

    def post(
        self, path: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """`timeout`: seconds to wait for this answer (default: the client's `timeout`)."""
        data = json.dumps(body or {}).encode("utf-8")
        return self._call("POST", path, data, self.timeout if timeout is None else timeout)

    # -- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def stream(
        self, path: str, params: Mapping[str, str | None]
    ) -> Iterator[Iterator[dict[str, Any]]]:
        """GET `path` and yield its lines, decoded; `ApiError` when the mixer refuses (its
        message and details), cannot be reached, or the stream breaks."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}{API_PREFIX}{path}?{query}"
        headers = {"Accept": NDJSON, "User-Agent": f"fluxrig/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._refusal(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason, self.timeout) from None
        except OSError as exc:
            raise self._unreachable(exc, self.timeout) from None
        with response:
            if NDJSON not in response.headers.get("Content-Type", ""):
                raise ApiError(
                    f"{self.base_url} answered {path} with {response.headers.get('Content-Type')}"
                    f", not a stream of JSON lines; is it the mixer's API? ({WHERE})"
                )
            yield self._lines(response)

    def _lines(self, response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
        while True:
            try:
                line = response.readline(MAX_LINE)
            except TimeoutError:
                raise ApiError(
                    f"the mixer at {self.base_url} sent nothing for {self.timeout:g} s (a stream "
                    "that keeps its client informed sends more often): the connection is lost",
                    code="unreachable",
                ) from None
            except (http.client.HTTPException, OSError) as exc:
                raise ApiError(
                    f"the stream from the mixer at {self.base_url} broke: {exc or type(exc)}",
                    code="unreachable",
                ) from None
            if not line:
                return
            try:
                body = json.loads(line)
            except ValueError:
                continue  # a line cut at MAX_LINE, or not JSON: not a record
            if isinstance(body, dict):
                yield body

    def _call(self, method: str, path: str, data: bytes | None, timeout: float) -> Any:
        url = f"{self.base_url}{API_PREFIX}{path}"
        headers = {"Accept": "application/json", "User-Agent": f"fluxrig/{__version__}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
                return self._decode(response.read(), response.status)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._refusal(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason, timeout) from None
        except OSError as exc:  # timeouts and resets while reading the answer
            raise self._unreachable(exc, timeout) from None

    def _decode(self, raw: bytes, status: int) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(
                f"{self.base_url} answered HTTP {status} with something that is not JSON; "
                f"is it the mixer's API? ({WHERE})",
                status=status,
            ) from None

    def _unreachable(self, reason: object, timeout: float) -> ApiError:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror
        else:
            why = str(reason)
        return ApiError(
            f"cannot reach the mixer API at {self.base_url}: {why}; is fluxrig-mixer running? "
            f"({WHERE})",
            code="unreachable",
        )

    def _refusal(self, status: int, raw: bytes) -> ApiError:
        error = _error_body(raw)
        code = str(error.get("code", "")) if error else ""
        if status == 401:
            what = "refused the API token" if self._token else "needs an API token"
            return ApiError(f"the mixer {what} ({TOKEN_HINT})", status=401, code=code)
        if error is None:
            return ApiError(
                f"the mixer API at {self.base_url} answered HTTP {status} without an error body; "
                f"is it the mixer's API? ({WHERE})",
                status=status,
            )
        message = str(error.get("message") or f"HTTP {status}")
        if status == 404:
            message = f"not found: {message}"
        return ApiError(message, status=status, code=code, details=_details(error))


def _error_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _details(error: Mapping[str, Any]) -> list[Problem]:
    found = error.get("details")
    if not isinstance(found, list):
        return []
    problems = []
    for item in found:
        if isinstance(item, dict):
            line = item.get("line")
            problems.append(
                Problem(
                    str(item.get("path", "")),
                    str(item.get("message", "")),
                    line if isinstance(line, int) else None,
                )
            )
    return problems
