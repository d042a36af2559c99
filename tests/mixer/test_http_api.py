"""The mixer's REST API over real HTTP (port 0) with a real CAS store and registry on DuckDB."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mixer import __version__
from mixer.api.errors import ERROR_TABLE, INTERNAL, classify, to_problem
from mixer.api.http import API_PREFIX, OPERATIONS, ApiContext, Operation, build_app
from mixer.api.http.operation import Call, Reply
from mixer.errors import (
    ConflictError,
    InvalidRefError,
    MachineIdsExhaustedError,
    NotFoundError,
    RackConflictError,
    RackNameError,
    RackNotFoundError,
    StoreError,
)
from mixer.store import digest_of
from mixer.telemetry import TelemetryHub
from rack.errors import Problem, ScenarioError
from rack.natsd import NatsServer, NatsServerConfig
from tests.mixer.conftest import started_orchestrator
from tests.mixer.documents import INVALID_SCENARIO, SCENARIO, SCENARIO_V2, TOKEN
from tests.mixer.telemetry.conftest import settings as telemetry_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1 = API_PREFIX
GRPC_CODES = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}  # fmt: skip


# --- fixtures -------------------------------------------------------------------------------------


async def _client(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


@pytest.fixture
async def client(ctx: ApiContext) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for c in _client(build_app(ctx)):
        yield c


Client = TestClient[web.Request, web.Application]


async def error_of(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return dict(body["error"])


async def import_scenario(client: Client, content: str = SCENARIO, **fields: Any) -> Any:
    body = {"tag": "v1.0.0", "content": content, **fields}
    return await client.post(f"{V1}/scenarios", json=body, headers=AUTH)


# --- system: health, document, auth ------------------------------------------------------------


async def test_health_is_public(client: Client) -> None:
    resp = await client.get(f"{V1}/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "version": __version__}


async def test_openapi_document_lists_exactly_the_registered_routes(
    client: Client, ctx: ApiContext
) -> None:
    resp = await client.get(f"{V1}/openapi.json")  # public
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "[api] token",
    }
    assert doc["security"] == [{"bearerAuth": []}]
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    registered = {
        (r.method, r.resource.canonical)
        for r in build_app(ctx).router.routes()
        if r.resource is not None
    }
    assert documented == registered
    assert (
        "POST",
        f"{V1}/scenarios",
    ) in documented
    assert doc["paths"][f"{V1}/health"]["get"]["security"] == []
    assert "security" not in doc["paths"][f"{V1}/racks"]["get"]
    assert "401" in doc["paths"][f"{V1}/racks"]["get"]["responses"]


async def test_missing_or_wrong_token_is_401_with_challenge(client: Client) -> None:
    resp = await client.get(f"{V1}/racks")
    err = await error_of(resp, 401, "unauthenticated")
    assert "Authorization: Bearer" in err["message"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="fluxrig-mixer"'

    resp = await client.get(f"{V1}/racks", headers={"Authorization": "Bearer wrong"})
    await error_of(resp, 401, "unauthenticated")
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]

    for header in ("Basic " + TOKEN, TOKEN, "Bearer", f"Bearer {TOKEN}x", "Bearer é"):
        resp = await client.get(f"{V1}/racks", headers={"Authorization": header})
        await error_of(resp, 401, "unauthenticated")

    resp = await client.get(f"{V1}/racks", headers={"Authorization": f"bearer  {TOKEN} "})
    assert resp.status == 200  # the scheme is case-insensitive, spaces around are ignored


async def test_unknown_route_is_401_without_token_and_json_404_with(client: Client) -> None:
    await error_of(await client.get(f"{V1}/nope"), 401, "unauthenticated")
    resp = await client.get(f"{V1}/nope", headers=AUTH)
    err = await error_of(resp, 404, "route_not_found")
    assert "openapi.json" in err["message"]
    await error_of(await client.get("/elsewhere", headers=AUTH), 404, "route_not_found")


async def test_wrong_method_is_json_405_with_allow(client: Client) -> None:
    resp = await client.delete(f"{V1}/racks", headers=AUTH)
    await error_of(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET"
    resp = await client.get(f"{V1}/scenarios", headers=AUTH)
    assert resp.status == 200


async def test_insecure_mode_needs_no_token(ctx: ApiContext) -> None:
    insecure = ApiContext(ctx.store, ctx.registry, ctx.gears, auth_token=None)
    async for client in _client(build_app(insecure)):
        assert (await client.get(f"{V1}/racks")).status == 200
        doc = await (await client.get(f"{V1}/openapi.json")).json()
        assert "security" not in doc
        assert "securitySchemes" not in doc["components"]
        assert "401" not in doc["paths"][f"{V1}/racks"]["get"]["responses"]


def test_context_refuses_an_empty_token(ctx: ApiContext) -> None:
    with pytest.raises(ValueError, match="auth_token is empty"):
        ApiContext(ctx.store, ctx.registry, ctx.gears, auth_token=" ")


# --- racks -----------------------------------------------------------------------------------


async def test_rack_listing_and_lookup(client: Client, ctx: ApiContext) -> None:
    ctx.registry.hello("rack-a", version="1.2.3", attributes={"public_key": "k1"})
    ctx.registry.hello("rack-b", auto_adopt=True)

    body = await (await client.get(f"{V1}/racks", headers=AUTH)).json()
    assert [(r["name"], r["status"], r["machine_id"]) for r in body["racks"]] == [
        ("rack-a", "pending", 1),
        ("rack-b", "active", 2),
    ]
    body = await (await client.get(f"{V1}/racks?status=active", headers=AUTH)).json()
    assert [r["name"] for r in body["racks"]] == ["rack-b"]

    resp = await client.get(f"{V1}/racks/rack-a", headers=AUTH)
    rack = await resp.json()
    assert rack["version"] == "1.2.3"
    assert rack["attributes"] == {"public_key": "k1"}
    assert rack["entity_id"] == ctx.registry.get("rack-a").entity_id
    assert rack["last_seen"].endswith("Z")

    err = await error_of(await client.get(f"{V1}/racks/ghost", headers=AUTH), 404, "rack_not_found")
    assert "ghost" in err["message"]
    err = await error_of(
        await client.get(f"{V1}/racks?status=lost", headers=AUTH), 422, "invalid_request"
    )
    assert err["details"][0]["path"] == "query.status"
    err = await error_of(
        await client.get(f"{V1}/racks?stauts=active", headers=AUTH), 422, "invalid_request"
    )
    assert err["details"][0]["path"] == "query.stauts"
    await error_of(
        await client.get(f"{V1}/racks?status=active&status=pending", headers=AUTH),
        422,
        "invalid_request",
    )
    await error_of(await client.get(f"{V1}/gears?x=1", headers=AUTH), 422, "invalid_request")


async def test_rack_lifecycle_and_illegal_transitions(client: Client, ctx: ApiContext) -> None:
    ctx.registry.hello("rack-a")
    ctx.registry.hello("rack-b")

    async def act(verb: str, name: str = "rack-a") -> Any:
        return await client.post(f"{V1}/racks/{name}/{verb}", headers=AUTH)

    for verb, status in [("adopt", "active"), ("suspend", "suspended"), ("resume", "active")]:
        resp = await act(verb)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == status
    assert ctx.registry.get("rack-a").adopted

    err = await error_of(await act("suspend", "rack-b"), 409, "rack_conflict")
    assert "pending" in err["message"]
    await error_of(await act("adopt", "ghost"), 404, "rack_not_found")

    resp = await act("retire")
    assert (await resp.json())["status"] == "retired"
    await error_of(await act("adopt"), 409, "rack_conflict")

    rename = f"{V1}/racks/rack-a/rename"
    resp = await client.post(rename, json={"name": "rack-b"}, headers=AUTH)
    await error_of(resp, 409, "rack_conflict")
    resp = await client.post(rename, json={"name": "bad name!"}, headers=AUTH)
    err = await error_of(resp, 422, "invalid_request")
    assert err["details"][0]["path"] == "body.name"
    resp = await client.post(f"{V1}/racks/ghost/rename", json={"name": "x"}, headers=AUTH)
    await error_of(resp, 404, "rack_not_found")
    resp = await client.post(rename, json={"name": "rack-old"}, headers=AUTH)
    assert resp.status == 200
    renamed = await resp.json()
    assert (renamed["name"], renamed["status"], renamed["machine_id"]) == ("rack-old", "retired", 1)


# --- gears -------------------------------------------------------------------------------------


async def test_gear_catalogue(client: Client, ctx: ApiContext) -> None:
    body = await (await client.get(f"{V1}/gears", headers=AUTH)).json()
    gears = {g["type"]: g for g in body["gears"]}
    assert set(gears) == set(ctx.gears.names())
    assert gears["generator"]["inputs"] == []
    assert gears["generator"]["outputs"] == ["out"]
    assert gears["io_tcp"]["summary"]

    detail = await (await client.get(f"{V1}/gears/generator", headers=AUTH)).json()
    assert detail["type"] == "generator"
    assert "rate" in detail["config_schema"]["properties"]
    assert detail["description"].startswith("Produces synthetic messages")

    err = await error_of(await client.get(f"{V1}/gears/nope", headers=AUTH), 404, "unknown_gear")
    assert "generator" in err["message"]  # lists the known types


# --- scenarios ---------------------------------------------------------------------------------


async def test_scenario_import_is_created_then_idempotent(client: Client, ctx: ApiContext) -> None:
    resp = await import_scenario(client)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created == {
        "kind": "scenario",
        "name": "payment-flow",
        "tag": "v1.0.0",
        "ref": "payment-flow:v1.0.0",
        "digest": digest_of(SCENARIO.encode()),
        "size": len(SCENARIO.encode()),
        "created": True,
        "dry_run": False,
    }
    resp = await import_scenario(client, name="payment-flow")
    assert resp.status == 200
    assert (await resp.json())["created"] is False

    err = await error_of(await import_scenario(client, SCENARIO_V2), 409, "tag_conflict")
    assert "new tag" in err["message"]
    assert ctx.store.get("scenario", "payment-flow:v1.0.0").data == SCENARIO.encode()


async def test_scenario_dry_run_stores_nothing(client: Client, ctx: ApiContext) -> None:
    resp = await import_scenario(client, dry_run=True)
    assert resp.status == 200
    assert (await resp.json())["created"] is True
    assert (await resp.json())["dry_run"] is True
    assert ctx.store.list("scenario") == []


async def test_invalid_scenario_is_422_with_every_problem(client: Client, ctx: ApiContext) -> None:
    resp = await import_scenario(client, INVALID_SCENARIO)
    err = await error_of(resp, 422, "invalid_scenario")
    assert "broken" in err["message"]
    problems = {d["path"]: d for d in err["details"]}
    assert "gears[0].config.rate" in problems
    assert problems["gears[0].config.rate"]["line"] == 6
    assert problems["gears[0].config.colour"]["line"] == 7
    assert "no_such_gear" in problems["gears[1].type"]["message"]
    assert problems["gears[1].type"]["line"] == 9
    assert any(p.startswith("wires[0]") for p in problems)
    assert ctx.store.list("scenario") == []  # never stored


async def test_unreadable_scenario_is_422_with_line(client: Client) -> None:
    resp = await import_scenario(client, "name: x\ngears: [\n")
    err = await error_of(resp, 422, "invalid_scenario")
    assert err["details"][0]["path"] == "<document>"
    assert err["details"][0]["line"] == 3
    assert "YAML syntax error" in err["details"][0]["message"]

    resp = await import_scenario(client, "name: x\nname: y\n")
    err = await error_of(resp, 422, "invalid_scenario")
    assert err["details"][0] == {
        "path": "name",
        "line": 2,
        "message": err["details"][0]["message"],
    }


async def test_scenario_name_must_match_the_document(client: Client) -> None:
    err = await error_of(await import_scenario(client, name="other"), 422, "invalid_request")
    assert err["details"][0]["path"] == "body.name"
    err = await error_of(await import_scenario(client, tag="bad tag"), 400, "invalid_ref")
    assert "bad tag" in err["message"]
    await error_of(await import_scenario(client, tag="latest"), 400, "invalid_ref")


async def test_scenario_fetch_and_listing(client: Client) -> None:
    assert (await import_scenario(client)).status == 201
    assert (await import_scenario(client, SCENARIO_V2, tag="v1.1.0")).status == 201
    digest = digest_of(SCENARIO.encode())

    for ref, tag in [("payment-flow:v1.0.0", "v1.0.0"), ("payment-flow", "v1.1.0")]:
        body = await (await client.get(f"{V1}/scenarios/{ref}", headers=AUTH)).json()
        assert (body["name"], body["tag"], body["encoding"]) == ("payment-flow", tag, "utf-8")
    body = await (await client.get(f"{V1}/scenarios/{digest}", headers=AUTH)).json()
    assert body == {
        "kind": "scenario",
        "name": None,
        "tag": None,
        "digest": digest,
        "size": len(SCENARIO),
        "encoding": "utf-8",
        "content": SCENARIO,
    }
    await error_of(
        await client.get(f"{V1}/scenarios/payment-flow:v9", headers=AUTH), 404, "not_found"
    )
    await error_of(await client.get(f"{V1}/scenarios/a:b:c", headers=AUTH), 400, "invalid_ref")
    await error_of(await client.get(f"{V1}/specs/payment-flow", headers=AUTH), 404, "not_found")

    listing = await (await client.get(f"{V1}/scenarios", headers=AUTH)).json()
    assert [e["ref"] for e in listing["entries"]] == ["payment-flow:v1.0.0", "payment-flow:v1.1.0"]
    assert listing["entries"][0]["digest"] == digest
    listing = await (await client.get(f"{V1}/scenarios?name=other", headers=AUTH)).json()
    assert listing == {"entries": []}
    resp = await client.get(f"{V1}/scenarios?name=bad%20name", headers=AUTH)
    await error_of(resp, 400, "invalid_ref")


# --- specs -------------------------------------------------------------------------------------


async def test_specs_are_opaque_utf8_text(client: Client, ctx: ApiContext) -> None:
    spec = {"name": "Visa", "tag": "v1.0.0", "content": "fields: [MTI, PAN]\n"}
    resp = await client.post(f"{V1}/specs", json=spec, headers=AUTH)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["ref"] == "visa:v1.0.0"  # names are case-insensitive
    assert (await client.post(f"{V1}/specs", json=spec, headers=AUTH)).status == 200
    resp = await client.post(f"{V1}/specs", json={**spec, "content": "x"}, headers=AUTH)
    await error_of(resp, 409, "tag_conflict")

    body = await (await client.get(f"{V1}/specs/visa:latest", headers=AUTH)).json()
    assert body["content"] == spec["content"]
    listing = await (await client.get(f"{V1}/specs?name=visa", headers=AUTH)).json()
    assert [e["ref"] for e in listing["entries"]] == ["visa:v1.0.0"]

    raw = b'{"name": "visa", "tag": "v2", "content": "\\ud800"}'
    resp = await client.post(f"{V1}/specs", data=raw, headers=AUTH)
    err = await error_of(resp, 422, "invalid_request")
    assert err["details"][0]["path"] == "body.content"
    resp = await client.post(f"{V1}/specs", json={"tag": "v1", "content": "x"}, headers=AUTH)
    err = await error_of(resp, 422, "invalid_request")
    assert err["details"][0]["path"] == "body.name"
    resp = await client.post(f"{V1}/specs", json={**spec, "name": "no/slash"}, headers=AUTH)
    await error_of(resp, 400, "invalid_ref")


async def test_non_utf8_blob_is_served_as_base64(client: Client, ctx: ApiContext) -> None:
    ctx.store.put("spec", "binary", "v1", b"\xff\x00\x01")
    body = await (await client.get(f"{V1}/specs/binary:v1", headers=AUTH)).json()
    assert (body["encoding"], body["content"]) == ("base64", "/wAB")


# --- request bodies ----------------------------------------------------------------------------


async def test_malformed_and_invalid_bodies(client: Client) -> None:
    url = f"{V1}/scenarios"
    for raw in (b"{not json", b"\xff\xfe", b"", b"[" * 100_000, b'{"tag": 1' + b"0" * 5000 + b"}"):
        resp = await client.post(url, data=raw, headers=AUTH)
        await error_of(resp, 400, "malformed_request")

    resp = await client.post(url, json=["a list"], headers=AUTH)
    err = await error_of(resp, 422, "invalid_request")
    assert err["details"][0]["path"] == "body"

    body = {"tag": "v1", "content": SCENARIO, "dry_run": "yes", "extra": 1}
    err = await error_of(await client.post(url, json=body, headers=AUTH), 422, "invalid_request")
    assert {d["path"] for d in err["details"]} == {"body.dry_run", "body.extra"}


async def test_oversized_body_is_413(client: Client, ctx: ApiContext) -> None:
    big = json.dumps({"name": "big", "tag": "v1", "content": "x" * ctx.max_body_bytes}).encode()
    resp = await client.post(f"{V1}/specs", data=io.BytesIO(big), headers=AUTH)
    err = await error_of(resp, 413, "payload_too_large")
    assert str(ctx.max_body_bytes) in err["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"name": "big", "tag": "v1", "content": "'
        for _ in range(20):
            yield b"y" * 64 * 1024
        yield b'"}'

    resp = await client.post(f"{V1}/specs", data=chunks(), headers=AUTH)
    await error_of(resp, 413, "payload_too_large")


# --- errors: the one table ---------------------------------------------------------------------


async def test_unexpected_errors_are_500_without_internals(
    ctx: ApiContext, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(ctx: ApiContext, call: Call) -> Reply:
        raise RuntimeError("secret path /var/lib/mixer/key.pem")

    boom = Operation("GET", "/boom", "boom", "Fails.", "test", explode, {200: None})
    async for client in _client(build_app(ctx, [*OPERATIONS, boom])):
        with caplog.at_level(logging.ERROR, logger="fluxrig.mixer.api"):
            resp = await client.get(f"{V1}/boom", headers=AUTH)
        err = await error_of(resp, 500, "internal")
        assert "secret" not in err["message"]
        incident = err["message"].rsplit(" ", 1)[-1]
        assert incident in caplog.text
        assert "secret path" in caplog.text  # the traceback is in the log


def test_error_table() -> None:
    cases: list[tuple[BaseException, int, str, str]] = [
        (NotFoundError("x"), 404, "NOT_FOUND", "not_found"),
        (RackNotFoundError("x"), 404, "NOT_FOUND", "rack_not_found"),
        (ConflictError("x"), 409, "ALREADY_EXISTS", "tag_conflict"),
        (RackConflictError("x"), 409, "FAILED_PRECONDITION", "rack_conflict"),
        (InvalidRefError("x"), 400, "INVALID_ARGUMENT", "invalid_ref"),
        (RackNameError("x"), 400, "INVALID_ARGUMENT", "invalid_rack_name"),
        (ScenarioError("bad", []), 422, "INVALID_ARGUMENT", "invalid_scenario"),
        (MachineIdsExhaustedError("x"), 507, "RESOURCE_EXHAUSTED", "machine_ids_exhausted"),
        (StoreError("disk on fire"), 500, "INTERNAL", "internal"),
        (KeyError("k"), 500, "INTERNAL", "internal"),
    ]
    for exc, http, grpc, code in cases:
        kind = classify(exc)
        assert (kind.http, kind.grpc, kind.code) == (http, grpc, code), exc
    assert classify(KeyError()) is INTERNAL
    assert {k.grpc for k in ERROR_TABLE.values()} <= GRPC_CODES
    assert len({k.code for k in ERROR_TABLE.values()}) == len(ERROR_TABLE)


def test_to_problem_carries_scenario_problems() -> None:
    exc = ScenarioError("scenario 'x' is invalid (1 problem)", [Problem("gears[0].type", "?", 4)])
    status, body = to_problem(exc)
    assert status == 422
    assert body == {
        "error": {
            "code": "invalid_scenario",
            "message": "scenario 'x' is invalid (1 problem)",
            "details": [{"path": "gears[0].type", "message": "?", "line": 4}],
        }
    }
    assert json.loads(json.dumps(body)) == body


# --- schemathesis against the served document --------------------------------------------------


class LiveApi:
    """The API on 127.0.0.1:0 in a thread of its own, so synchronous HTTP clients can call it."""

    def __init__(self, ctx: ApiContext, database: duckdb.DuckDBPyConnection, store: Path) -> None:
        self.ctx = ctx
        self.database, self.store = database, store  # for the orchestrator and its hub
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        config = NatsServerConfig(port=0, store_dir=self.store)
        async with (
            NatsServer(config) as hub,
            started_orchestrator(self.ctx, self.database, hub.url) as orchestrator,
            TelemetryHub(telemetry_settings(), self.store / "telemetry") as telemetry,
        ):
            ctx = dataclasses.replace(self.ctx, orchestrator=orchestrator, telemetry=telemetry)
            await self._run(ctx)

    async def _run(self, ctx: ApiContext) -> None:
        assert self._stop is not None
        runner = web.AppRunner(build_app(ctx))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> LiveApi:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def live_api(
    ctx: ApiContext, database: duckdb.DuckDBPyConnection, tmp_path: Path
) -> Iterator[LiveApi]:
    ctx.registry.hello("rack-a")
    ctx.store.put("scenario", "payment-flow", "v1.0.0", SCENARIO.encode())
    with LiveApi(ctx, database, tmp_path / "hub") as api:
        yield api


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(live_api: LiveApi, mode: GenerationMode) -> None:
    """Every operation of the served document, fuzzed: no 5xx, only documented statuses, and
    every response matches its schema. (schemathesis' `from_fixture` does not run on pytest 9,
    so the operations are driven through hypothesis here.)"""
    schema = schemathesis.openapi.from_url(f"{live_api.url}{V1}/openapi.json")
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), results  # the document itself is valid
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    served = {f"{op.method} {op.url}": op for op in OPERATIONS}
    # schemathesis leaves out the operation that serves the schema it loaded
    assert {op.label for op in operations} == set(served) - {f"GET {V1}/openapi.json"}
    for operation in operations:
        row = served[operation.label]
        if mode is GenerationMode.NEGATIVE and not (row.body or row.query or "{" in row.path):
            continue  # nothing to get wrong: no parameters, no body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        check()
