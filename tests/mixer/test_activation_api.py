"""Scenario activation over REST: a real orchestrator on a real nats-server, racks played by a
raw NATS client (`FakeRack`), the API on a real HTTP port, DuckDB and the CAS store on disk."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mixer.api.http import API_PREFIX, ApiContext, build_app
from mixer.store import digest_of
from tests.mixer.conftest import APPLY_TIMEOUT, MakeRack, applies, fails, silent
from tests.mixer.documents import SCENARIO, SCENARIO_V2, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1 = API_PREFIX
DIGEST_V1 = digest_of(SCENARIO.encode())
DIGEST_V2 = digest_of(SCENARIO_V2.encode())
MISSING_SPEC = SCENARIO.replace("gears:\n", "spec: nope:1.0.0\ngears:\n", 1)

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(hub_ctx: ApiContext) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(hub_ctx), host="127.0.0.1", port=0)) as c:
        yield c


@pytest.fixture
def stored(hub_ctx: ApiContext) -> None:
    """payment-flow v1.0.0 and v2.0.0, and a v3.0.0 whose `spec` is not in the store."""
    for tag, text in (("v1.0.0", SCENARIO), ("v2.0.0", SCENARIO_V2), ("v3.0.0", MISSING_SPEC)):
        hub_ctx.store.put("scenario", "payment-flow", tag, text.encode())


async def ok(resp: Any) -> Any:
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def error_of(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == code
    return dict(body["error"])


async def activate(client: Client, ref: str) -> Any:
    return await client.post(f"{V1}/scenarios/{ref}/activate", headers=AUTH)


async def get(client: Client, path: str) -> Any:
    return await ok(await client.get(f"{V1}{path}", headers=AUTH))


def details(error: dict[str, Any]) -> dict[str, str]:
    return {d["path"]: d["message"] for d in error["details"]}


# --- no rack ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("stored")
async def test_activation_without_racks_is_immediate_and_supersedes(client: Client) -> None:
    assert await get(client, "/activation") == {"active": None, "racks": []}
    assert await get(client, "/activations") == {"activations": []}

    first = await ok(await activate(client, "payment-flow:v1.0.0"))
    assert first["racks"] == first["adopted"] == first["unknown"] == []
    act = first["activation"]
    assert (act["ref"], act["digest"], act["scenario"]) == (
        "payment-flow:v1.0.0",
        DIGEST_V1,
        "payment-flow",
    )
    assert (act["state"], act["error"], act["previous"]) == ("active", None, None)
    assert act["finished_at"] is not None
    assert (await get(client, "/activation"))["active"] == act

    second = (await ok(await activate(client, "payment-flow:v2.0.0")))["activation"]
    assert (second["state"], second["previous"]) == ("active", act["id"])
    assert (await get(client, "/activation"))["active"] == second

    history = (await get(client, "/activations"))["activations"]
    assert [(a["id"], a["state"]) for a in history] == [
        (second["id"], "active"),
        (act["id"], "superseded"),
    ]
    assert [a["id"] for a in (await get(client, "/activations?limit=1"))["activations"]] == [
        second["id"]
    ]


@pytest.mark.usefixtures("stored")
async def test_activation_by_digest_has_no_ref(client: Client) -> None:
    act = (await ok(await activate(client, DIGEST_V1)))["activation"]
    assert (act["ref"], act["digest"], act["state"]) == (None, DIGEST_V1, "active")


async def test_bad_history_limits_are_422(client: Client) -> None:
    for value in ("0", "1001", "abc", "-1"):
        resp = await client.get(f"{V1}/activations?limit={value}", headers=AUTH)
        err = await error_of(resp, 422, "invalid_request")
        assert err["details"][0]["path"] == "query.limit"


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("stored")
async def test_unknown_and_malformed_refs(client: Client) -> None:
    err = await error_of(await activate(client, "payment-flow:v9"), 404, "not_found")
    assert "payment-flow:v9" in err["message"]
    await error_of(await activate(client, "a:b:c"), 400, "invalid_ref")
    assert (await get(client, "/activations"))["activations"] == []  # nothing recorded


@pytest.mark.usefixtures("stored")
async def test_rejected_scenario_is_422_and_changes_nothing(client: Client) -> None:
    active = (await ok(await activate(client, "payment-flow:v1.0.0")))["activation"]

    err = await error_of(await activate(client, "payment-flow:v3.0.0"), 422, "invalid_scenario")
    problems = details(err)
    assert set(problems) == {"spec"}
    assert "'nope:1.0.0' is not in the store" in problems["spec"]

    assert (await get(client, "/activation"))["active"] == active
    rejected, previous = (await get(client, "/activations"))["activations"]
    assert (rejected["state"], rejected["ref"]) == ("rejected", "payment-flow:v3.0.0")
    assert "nope:1.0.0" in rejected["error"]
    assert previous == active


# --- racks that answer ---------------------------------------------------------------------------


@pytest.mark.usefixtures("stored")
async def test_a_rack_applies_and_provenance_shows_it(client: Client, fake_rack: MakeRack) -> None:
    edge = await fake_rack("edge-1", applies("edge-1"))

    body = await ok(await activate(client, "payment-flow:v1.0.0"))
    assert body["racks"] == [
        {"rack": "edge-1", "state": "applied", "error": None, "report": "started 2 gears"}
    ]
    push = await edge.next_push()
    assert (push.activation, push.digest, push.document, push.rollback) == (
        body["activation"]["id"],
        DIGEST_V1,
        SCENARIO,
        False,
    )

    (row,) = (await get(client, "/provenance?rack=edge-1"))["racks"]
    assert (row["rack"], row["digest"], row["ref"], row["applied"]) == (
        "edge-1",
        DIGEST_V1,
        "payment-flow:v1.0.0",
        True,
    )
    assert (row["activation"], row["last_activation"]) == (push.activation, push.activation)
    assert (row["last_state"], row["last_error"]) == ("applied", None)
    assert row["since"] is not None
    assert row["pushed_at"] is not None
    fleet = await get(client, "/activation")
    assert fleet["racks"] == [row]
    assert fleet["active"]["id"] == push.activation

    assert await get(client, "/provenance") == {"racks": [row]}
    err = await error_of(
        await client.get(f"{V1}/provenance?rack=ghost", headers=AUTH), 404, "rack_not_found"
    )
    assert "ghost" in err["message"]
    resp = await client.get(f"{V1}/provenance?rack=bad%20name", headers=AUTH)
    await error_of(resp, 422, "invalid_request")


@pytest.mark.usefixtures("stored")
async def test_a_failing_rack_is_409_and_the_fleet_rolls_back(
    client: Client, fake_rack: MakeRack
) -> None:
    edge1 = await fake_rack("edge-1", applies("edge-1"))
    edge2 = await fake_rack("edge-2", applies("edge-2"))
    before = (await ok(await activate(client, "payment-flow:v1.0.0")))["activation"]
    assert [p.digest for p in edge1.drained()] == [DIGEST_V1]
    assert [p.digest for p in edge2.drained()] == [DIGEST_V1]

    edge1.answer = fails("edge-1", "port 9000 in use")
    err = await error_of(await activate(client, "payment-flow:v2.0.0"), 409, "activation_failed")
    assert "rack 'edge-1' could not apply it: port 9000 in use" in err["message"]
    assert "payment-flow:v1.0.0" in err["message"]  # what the fleet is back on
    assert details(err) == {
        "racks.edge-1": "failed: port 9000 in use",
        "racks.edge-2": "applied it",
        "rollback.edge-2": "rolled back",
    }

    # edge-1 refused (and kept what it ran); edge-2 applied, then was pushed v1 again
    assert [(p.digest, p.rollback) for p in edge1.drained()] == [(DIGEST_V2, False)]
    pushed, rollback = edge2.drained()
    assert (pushed.digest, pushed.rollback) == (DIGEST_V2, False)
    assert (rollback.digest, rollback.activation, rollback.rollback) == (
        DIGEST_V1,
        before["id"],
        True,
    )
    assert rollback.document == SCENARIO

    assert (await get(client, "/activation"))["active"] == before
    failed = (await get(client, "/activations"))["activations"][0]
    assert (failed["state"], failed["ref"]) == ("failed", "payment-flow:v2.0.0")
    assert "port 9000 in use" in failed["error"]
    rows = {r["rack"]: r for r in (await get(client, "/provenance"))["racks"]}
    assert (rows["edge-1"]["digest"], rows["edge-1"]["applied"]) == (DIGEST_V1, True)
    assert (rows["edge-1"]["last_state"], rows["edge-1"]["last_error"]) == (
        "failed",
        "port 9000 in use",
    )
    assert (rows["edge-2"]["digest"], rows["edge-2"]["applied"]) == (DIGEST_V1, True)
    assert rows["edge-2"]["last_activation"] == before["id"]


@pytest.mark.usefixtures("stored")
async def test_a_silent_rack_times_out_and_the_activation_fails(
    client: Client, fake_rack: MakeRack
) -> None:
    edge = await fake_rack("edge-1", silent)
    err = await error_of(await activate(client, "payment-flow:v1.0.0"), 409, "activation_failed")
    assert "rack 'edge-1' did not answer" in err["message"]
    assert "back on no scenario" in err["message"]
    timeout = f"no answer in {APPLY_TIMEOUT:g}s"
    assert details(err) == {
        "racks.edge-1": f"timeout: {timeout}",
        "rollback.edge-1": f"rollback timeout: {timeout}",
    }
    pushed, rollback = edge.drained()
    assert (pushed.digest, pushed.rollback) == (DIGEST_V1, False)
    assert (rollback.activation, rollback.digest, rollback.document) == (0, None, None)
    assert (await get(client, "/activation"))["active"] is None
    (row,) = (await get(client, "/provenance"))["racks"]
    assert (row["digest"], row["applied"], row["last_state"]) == (None, False, "pushed")


# --- no orchestrator ------------------------------------------------------------------------------


async def test_without_an_orchestrator_every_activation_route_is_503(ctx: ApiContext) -> None:
    bare = dataclasses.replace(ctx, orchestrator=None)
    async with TestClient(TestServer(build_app(bare), host="127.0.0.1", port=0)) as client:
        for method, path in (
            ("POST", "/scenarios/payment-flow:v1.0.0/activate"),
            ("GET", "/activation"),
            ("GET", "/activations"),
            ("GET", "/provenance"),
        ):
            resp = await client.request(method, f"{V1}{path}", headers=AUTH)
            err = await error_of(resp, 503, "unavailable")
            assert "orchestrator" in err["message"]
        doc = await (await client.get(f"{V1}/openapi.json")).json()
        for path, item in doc["paths"].items():
            if "activat" in path or "provenance" in path:
                assert all("503" in op["responses"] for op in item.values()), path
