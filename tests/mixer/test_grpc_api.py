"""The mixer's gRPC API over real gRPC (port 0) with a real CAS store and registry on DuckDB."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from fluxrig.v1 import (
    gears_pb2,
    gears_pb2_grpc,
    racks_pb2,
    racks_pb2_grpc,
    store_pb2,
    store_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mixer.api.grpc import SERVICES, GrpcApi, RackWatch, start_grpc_server
from mixer.api.grpc.status import ERROR_BODY_KEY, ERROR_CODE_KEY
from mixer.api.http import ApiContext
from mixer.errors import MixerError
from mixer.registry import RackRecord, RackStatus
from mixer.store import digest_of
from tests.mixer.conftest import MakeRack, applies, fails
from tests.mixer.documents import INVALID_SCENARIO, SCENARIO, SCENARIO_V2, TOKEN

AUTH = (("authorization", f"Bearer {TOKEN}"),)
BOUND = 10.0  # seconds: an upper bound for anything that should take milliseconds


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def api(ctx: ApiContext) -> AsyncIterator[GrpcApi]:
    async with GrpcApi(ctx, "127.0.0.1", 0, poll_interval=0.05, grace=1.0) as server:
        yield server


@pytest.fixture
async def channel(api: GrpcApi) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(api.target) as ch:
        yield ch


@pytest.fixture
def racks(channel: grpc.aio.Channel) -> racks_pb2_grpc.RackServiceStub:
    return racks_pb2_grpc.RackServiceStub(channel)


@pytest.fixture
def scenarios(channel: grpc.aio.Channel) -> store_pb2_grpc.ScenarioServiceStub:
    return store_pb2_grpc.ScenarioServiceStub(channel)


@pytest.fixture
def specs(channel: grpc.aio.Channel) -> store_pb2_grpc.SpecServiceStub:
    return store_pb2_grpc.SpecServiceStub(channel)


@pytest.fixture
def gears(channel: grpc.aio.Channel) -> gears_pb2_grpc.GearServiceStub:
    return gears_pb2_grpc.GearServiceStub(channel)


async def rpc_error(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await `call`, which must fail with `code`; the error (message checked non-empty)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() == code, err.details()
    assert err.details()
    return err


def trailers(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    return dict(err.trailing_metadata() or ())


def error_body(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(trailers(err)[ERROR_BODY_KEY])
    return body["error"]


# --- server lifecycle -----------------------------------------------------------------------------


async def test_server_binds_port_zero_and_start_and_close_are_idempotent(ctx: ApiContext) -> None:
    server = await start_grpc_server(ctx, "127.0.0.1", 0)
    try:
        assert server.port is not None
        assert server.port > 0
        await server.start()  # no-op
        assert server.target == f"127.0.0.1:{server.port}"
    finally:
        await server.aclose()
        await server.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await server.start()


async def test_a_taken_port_is_a_mixer_error(api: GrpcApi, ctx: ApiContext) -> None:
    assert api.port is not None
    second = GrpcApi(ctx, "127.0.0.1", api.port)
    with pytest.raises(MixerError, match=f"cannot listen on 127.0.0.1:{api.port}.*grpc_port"):
        await second.start()
    await second.aclose()


# --- racks --------------------------------------------------------------------------------------


async def test_list_and_get_racks(ctx: ApiContext, racks: racks_pb2_grpc.RackServiceStub) -> None:
    ctx.registry.hello("rack-a", version="1.2.3", attributes={"public_key": "k1", "zone": 3})
    ctx.registry.hello("rack-b", auto_adopt=True)

    listed = await racks.ListRacks(racks_pb2.ListRacksRequest(), metadata=AUTH)
    assert [r.name for r in listed.racks] == ["rack-a", "rack-b"]
    active = await racks.ListRacks(racks_pb2.ListRacksRequest(status="active"), metadata=AUTH)
    assert [r.name for r in active.racks] == ["rack-b"]

    rack = await racks.GetRack(racks_pb2.RackRef(name="rack-a"), metadata=AUTH)
    record = ctx.registry.get("rack-a")
    assert (rack.status, rack.adopted, rack.version) == ("pending", False, "1.2.3")
    assert (rack.machine_id, rack.entity_id) == (record.machine_id, record.entity_id)
    assert dict(rack.attributes) == {"public_key": "k1", "zone": 3.0}
    assert rack.created_at.ToDatetime(tzinfo=record.created_at.tzinfo) == record.created_at
    assert rack.HasField("last_seen")
    assert not (await racks.GetRack(racks_pb2.RackRef(name="rack-b"), metadata=AUTH)).version

    err = await rpc_error(
        racks.ListRacks(racks_pb2.ListRacksRequest(status="sleeping"), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "unknown status 'sleeping'" in err.details()
    err = await rpc_error(
        racks.GetRack(racks_pb2.RackRef(name="ghost"), metadata=AUTH), grpc.StatusCode.NOT_FOUND
    )
    assert "ghost" in err.details()
    assert trailers(err)[ERROR_CODE_KEY] == "rack_not_found"


async def test_rack_lifecycle(ctx: ApiContext, api: GrpcApi) -> None:
    told: list[RackRecord] = []

    async def on_change(record: RackRecord) -> None:
        told.append(record)

    notifying = dataclasses.replace(ctx, on_rack_change=on_change)
    ctx.registry.hello("rack-a")
    async with (
        GrpcApi(notifying, "127.0.0.1", 0) as server,
        grpc.aio.insecure_channel(server.target) as ch,
    ):
        stub = racks_pb2_grpc.RackServiceStub(ch)
        ref = racks_pb2.RackRef(name="rack-a")
        err = await rpc_error(
            stub.ResumeRack(ref, metadata=AUTH), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert "pending" in err.details()
        assert trailers(err)[ERROR_CODE_KEY] == "rack_conflict"

        assert (await stub.AdoptRack(ref, metadata=AUTH)).status == "active"
        assert (await stub.SuspendRack(ref, metadata=AUTH)).status == "suspended"
        assert (await stub.ResumeRack(ref, metadata=AUTH)).status == "active"
        renamed = await stub.RenameRack(
            racks_pb2.RenameRackRequest(name="rack-a", new_name="rack-z"), metadata=AUTH
        )
        assert (renamed.name, renamed.status) == ("rack-z", "active")
        retired = await stub.RetireRack(racks_pb2.RackRef(name="rack-z"), metadata=AUTH)
        assert retired.status == "retired"
        await rpc_error(
            stub.AdoptRack(racks_pb2.RackRef(name="rack-z"), metadata=AUTH),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        for action in (stub.AdoptRack, stub.SuspendRack, stub.ResumeRack, stub.RetireRack):
            await rpc_error(
                action(racks_pb2.RackRef(name="nope"), metadata=AUTH), grpc.StatusCode.NOT_FOUND
            )
        await rpc_error(
            stub.RenameRack(racks_pb2.RenameRackRequest(name="nope", new_name="x"), metadata=AUTH),
            grpc.StatusCode.NOT_FOUND,
        )
    assert [r.status for r in told] == ["active", "suspended", "active", "retired"]


# --- watch --------------------------------------------------------------------------------------


async def test_watch_sends_snapshot_then_changes(
    ctx: ApiContext, racks: racks_pb2_grpc.RackServiceStub
) -> None:
    ctx.registry.hello("rack-a")
    ctx.registry.hello("rack-b", auto_adopt=True)
    stream = racks.WatchRacks(racks_pb2.WatchRacksRequest(include_current=True), metadata=AUTH)
    async with asyncio.timeout(BOUND):
        snapshot = [await stream.read(), await stream.read()]
        assert [(e.rack.name, e.rack.status, e.previous_status) for e in snapshot] == [
            ("rack-a", "pending", ""),
            ("rack-b", "active", ""),
        ]
        # changed behind the API's back: seen by the poll
        await asyncio.to_thread(ctx.registry.adopt, "rack-a")
        event = await stream.read()
        assert (event.rack.name, event.rack.status, event.previous_status) == (
            "rack-a",
            "active",
            "pending",
        )
        # changed through the API: published at once
        await racks.SuspendRack(racks_pb2.RackRef(name="rack-b"), metadata=AUTH)
        event = await stream.read()
        assert (event.rack.name, event.rack.status, event.previous_status) == (
            "rack-b",
            "suspended",
            "active",
        )
        # a rack that enrolls later appears with no previous status
        await asyncio.to_thread(ctx.registry.hello, "rack-c")
        event = await stream.read()
        assert (event.rack.name, event.rack.status, event.previous_status) == (
            "rack-c",
            "pending",
            "",
        )
    stream.cancel()


async def test_watch_without_snapshot_and_ends_when_the_server_closes(
    ctx: ApiContext, api: GrpcApi, racks: racks_pb2_grpc.RackServiceStub
) -> None:
    ctx.registry.hello("rack-a")
    stream = racks.WatchRacks(racks_pb2.WatchRacksRequest(), metadata=AUTH)
    async with asyncio.timeout(BOUND):
        assert ("fluxrig-watch", "subscribed") in tuple(await stream.initial_metadata())
        await racks.AdoptRack(racks_pb2.RackRef(name="rack-a"), metadata=AUTH)
        event = await stream.read()
        assert (event.rack.name, event.rack.status) == ("rack-a", "active")
        await api.aclose()
        assert await stream.read() is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK


async def test_rack_watch_drops_oldest_for_a_lagging_watcher_and_resyncs(
    ctx: ApiContext,
) -> None:
    registry = ctx.registry
    registry.hello("rack-a")
    watch = RackWatch(registry, poll_interval=3600, queue_size=1)  # only `publish` + resync
    changes = watch.changes(include_current=True)
    async with asyncio.timeout(BOUND):
        first = await anext(changes)  # the snapshot; the watcher is now subscribed
        assert (first.record.status, first.previous) == (RackStatus.PENDING, None)
        assert watch.watchers == 1

        adopted = registry.adopt("rack-a")
        suspended = registry.suspend("rack-a")
        watch.publish(adopted, RackStatus.PENDING)
        watch.publish(suspended, RackStatus.ACTIVE)  # the queue holds one: `adopted` is dropped
        change = await anext(changes)  # the watcher re-read the registry instead
        assert (change.record.status, change.previous) == (RackStatus.SUSPENDED, "pending")
        assert watch.dropped == 1

        watch.publish(suspended, RackStatus.ACTIVE)  # already reported: not sent twice
        watch.publish(registry.retire("rack-a"), RackStatus.SUSPENDED)
        change = await anext(changes)
        assert (change.record.status, change.previous) == (RackStatus.RETIRED, "suspended")

        watch.close()
        with pytest.raises(StopAsyncIteration):
            await anext(changes)
    assert watch.watchers == 0


# --- scenarios and specs ------------------------------------------------------------------------


async def test_import_list_and_get_scenarios(
    ctx: ApiContext, scenarios: store_pb2_grpc.ScenarioServiceStub
) -> None:
    dry = await scenarios.ImportScenario(
        store_pb2.ImportRequest(tag="v1.0.0", content=SCENARIO, dry_run=True), metadata=AUTH
    )
    assert (dry.created, dry.dry_run, dry.ref.name) == (True, True, "payment-flow")
    assert not (await scenarios.ListScenarios(store_pb2.ListRequest(), metadata=AUTH)).refs

    made = await scenarios.ImportScenario(
        store_pb2.ImportRequest(tag="v1.0.0", content=SCENARIO), metadata=AUTH
    )
    assert (made.created, made.dry_run) == (True, False)
    assert made.ref.digest == digest_of(SCENARIO.encode())
    assert (made.ref.kind, made.ref.tag, made.ref.size) == ("scenario", "v1.0.0", len(SCENARIO))
    assert made.ref.HasField("created_at")
    again = await scenarios.ImportScenario(
        store_pb2.ImportRequest(name="payment-flow", tag="v1.0.0", content=SCENARIO),
        metadata=AUTH,
    )
    assert not again.created
    await scenarios.ImportScenario(
        store_pb2.ImportRequest(tag="v2.0.0", content=SCENARIO_V2), metadata=AUTH
    )

    listed = await scenarios.ListScenarios(store_pb2.ListRequest(), metadata=AUTH)
    assert [r.tag for r in listed.refs] == ["v1.0.0", "v2.0.0"]
    named = await scenarios.ListScenarios(store_pb2.ListRequest(name="other"), metadata=AUTH)
    assert not named.refs

    latest = await scenarios.GetScenario(store_pb2.GetRequest(ref="payment-flow"), metadata=AUTH)
    assert (latest.ref.tag, latest.content) == ("v2.0.0", SCENARIO_V2)
    assert latest.ref.HasField("created_at")
    by_digest = await scenarios.GetScenario(
        store_pb2.GetRequest(ref=made.ref.digest), metadata=AUTH
    )
    assert (by_digest.content, by_digest.ref.digest) == (SCENARIO, made.ref.digest)

    err = await rpc_error(
        scenarios.ImportScenario(
            store_pb2.ImportRequest(tag="v1.0.0", content=SCENARIO_V2), metadata=AUTH
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "v1.0.0" in err.details()
    assert trailers(err)[ERROR_CODE_KEY] == "tag_conflict"
    await rpc_error(
        scenarios.GetScenario(store_pb2.GetRequest(ref="payment-flow:v9"), metadata=AUTH),
        grpc.StatusCode.NOT_FOUND,
    )
    await rpc_error(
        scenarios.GetScenario(store_pb2.GetRequest(ref="bad ref!"), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await rpc_error(
        scenarios.ImportScenario(store_pb2.ImportRequest(content=SCENARIO), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_invalid_scenario_lists_every_problem(
    ctx: ApiContext, scenarios: store_pb2_grpc.ScenarioServiceStub
) -> None:
    err = await rpc_error(
        scenarios.ImportScenario(
            store_pb2.ImportRequest(tag="v1", content=INVALID_SCENARIO), metadata=AUTH
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "gears[0].config.rate (line 6):" in err.details()
    assert "gears[1].type (line 9):" in err.details()
    assert "no_such_gear" in err.details()
    error = error_body(err)
    assert error["code"] == "invalid_scenario"
    problems = {d["path"]: d for d in error["details"]}
    assert problems["gears[0].config.colour"]["line"] == 7
    assert any(p.startswith("wires[0]") for p in problems)
    assert ctx.store.list("scenario") == []  # never stored


async def test_import_list_and_get_specs(specs: store_pb2_grpc.SpecServiceStub) -> None:
    made = await specs.ImportSpec(
        store_pb2.ImportRequest(name="visa", tag="v1.0.0", content="fields: {}\n"), metadata=AUTH
    )
    assert (made.created, made.ref.kind, made.ref.name) == (True, "spec", "visa")
    listed = await specs.ListSpecs(store_pb2.ListRequest(name="visa"), metadata=AUTH)
    assert [r.tag for r in listed.refs] == ["v1.0.0"]
    got = await specs.GetSpec(store_pb2.GetRequest(ref="visa:v1.0.0"), metadata=AUTH)
    assert got.content == "fields: {}\n"
    await rpc_error(
        specs.ImportSpec(
            store_pb2.ImportRequest(name="visa", tag="v1.0.0", content="other"), metadata=AUTH
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    err = await rpc_error(
        specs.ImportSpec(store_pb2.ImportRequest(tag="v1", content="x"), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "name" in err.details()
    await rpc_error(
        specs.GetSpec(store_pb2.GetRequest(ref="mastercard"), metadata=AUTH),
        grpc.StatusCode.NOT_FOUND,
    )


# --- activation ---------------------------------------------------------------------------------

MISSING_SPEC = SCENARIO.replace("gears:\n", "spec: nope:1.0.0\ngears:\n", 1)


@pytest.fixture
async def live(hub_ctx: ApiContext) -> AsyncIterator[store_pb2_grpc.ScenarioServiceStub]:
    """ScenarioService over a started orchestrator, with three stored versions (v3: a missing
    spec)."""
    for tag, text in (("v1.0.0", SCENARIO), ("v2.0.0", SCENARIO_V2), ("v3.0.0", MISSING_SPEC)):
        hub_ctx.store.put("scenario", "payment-flow", tag, text.encode())
    async with (
        GrpcApi(hub_ctx, "127.0.0.1", 0, grace=1.0) as server,
        grpc.aio.insecure_channel(server.target) as ch,
    ):
        yield store_pb2_grpc.ScenarioServiceStub(ch)


async def test_activate_and_get_the_active_scenario(
    live: store_pb2_grpc.ScenarioServiceStub, fake_rack: MakeRack
) -> None:
    empty = await live.GetActiveScenario(store_pb2.ListRequest(), metadata=AUTH)
    assert not empty.HasField("activation")
    assert not empty.HasField("ref")
    assert not empty.racks
    await fake_rack("edge-1", applies("edge-1"))

    reply = await live.ActivateScenario(
        store_pb2.ActivateRequest(ref="payment-flow:v1.0.0"), metadata=AUTH
    )
    act = reply.activation
    assert (act.ref, act.digest, act.scenario, act.state, act.previous) == (
        "payment-flow:v1.0.0", digest_of(SCENARIO.encode()), "payment-flow", "active", 0,
    )  # fmt: skip
    assert act.HasField("requested_at")
    assert act.HasField("finished_at")
    assert (reply.ref.name, reply.ref.tag, reply.ref.digest, reply.ref.size) == (
        "payment-flow", "v1.0.0", act.digest, len(SCENARIO.encode()),
    )  # fmt: skip
    assert reply.ref.HasField("created_at")
    assert [(o.rack, o.state, o.error, o.report) for o in reply.outcomes] == [
        ("edge-1", "applied", "", "started 2 gears")
    ]
    (row,) = reply.racks
    assert (row.rack, row.digest, row.ref, row.applied, row.activation, row.last_state) == (
        "edge-1", act.digest, "payment-flow:v1.0.0", True, act.id, "applied",
    )  # fmt: skip
    assert row.HasField("since")

    active = await live.GetActiveScenario(store_pb2.ListRequest(), metadata=AUTH)
    assert active.activation == act
    assert active.ref == reply.ref
    assert list(active.racks) == list(reply.racks)
    assert not active.outcomes

    by_digest = await live.ActivateScenario(
        store_pb2.ActivateRequest(ref=digest_of(SCENARIO_V2.encode())), metadata=AUTH
    )
    assert (by_digest.activation.ref, by_digest.activation.previous) == ("", act.id)
    assert (by_digest.ref.name, by_digest.ref.size) == ("", len(SCENARIO_V2.encode()))


async def test_activation_errors_go_through_the_table(
    live: store_pb2_grpc.ScenarioServiceStub, fake_rack: MakeRack
) -> None:
    err = await rpc_error(
        live.ActivateScenario(store_pb2.ActivateRequest(ref="payment-flow:v9"), metadata=AUTH),
        grpc.StatusCode.NOT_FOUND,
    )
    assert trailers(err)[ERROR_CODE_KEY] == "not_found"
    await rpc_error(
        live.ActivateScenario(store_pb2.ActivateRequest(), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    err = await rpc_error(
        live.ActivateScenario(store_pb2.ActivateRequest(ref="payment-flow:v3.0.0"), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "  - spec: spec 'nope:1.0.0' is not in the store" in err.details()
    assert error_body(err)["code"] == "invalid_scenario"

    await fake_rack("edge-1", fails("edge-1", "port 9000 in use"))
    err = await rpc_error(
        live.ActivateScenario(store_pb2.ActivateRequest(ref="payment-flow:v1.0.0"), metadata=AUTH),
        grpc.StatusCode.ABORTED,
    )
    assert "  - racks.edge-1: failed: port 9000 in use" in err.details()
    error = error_body(err)
    assert error["code"] == "activation_failed"
    assert error["details"] == [
        {"path": "racks.edge-1", "message": "failed: port 9000 in use", "line": None}
    ]
    active = await live.GetActiveScenario(store_pb2.ListRequest(), metadata=AUTH)
    assert not active.HasField("activation")
    assert [(r.rack, r.applied, r.last_state, r.error) for r in active.racks] == [
        ("edge-1", False, "failed", "port 9000 in use")
    ]

    err = await rpc_error(
        live.GetActiveScenario(store_pb2.ListRequest(name="x"), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "name" in err.details()


async def test_activation_without_an_orchestrator_is_unavailable(ctx: ApiContext) -> None:
    bare = dataclasses.replace(ctx, orchestrator=None)
    async with (
        GrpcApi(bare, "127.0.0.1", 0, grace=1.0) as server,
        grpc.aio.insecure_channel(server.target) as ch,
    ):
        stub = store_pb2_grpc.ScenarioServiceStub(ch)
        for call in (
            stub.ActivateScenario(store_pb2.ActivateRequest(ref="x:v1"), metadata=AUTH),
            stub.GetActiveScenario(store_pb2.ListRequest(), metadata=AUTH),
        ):
            err = await rpc_error(call, grpc.StatusCode.UNAVAILABLE)
            assert "orchestrator" in err.details()
            assert trailers(err)[ERROR_CODE_KEY] == "unavailable"


# --- errors, auth, health, reflection -----------------------------------------------------------


async def test_unexpected_errors_are_internal_and_leak_nothing(
    ctx: ApiContext,
    scenarios: store_pb2_grpc.ScenarioServiceStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx.store.close()  # its cursor is gone: the next query fails inside duckdb
    with caplog.at_level(logging.ERROR, logger="fluxrig.mixer.api"):
        err = await rpc_error(
            scenarios.ListScenarios(store_pb2.ListRequest(), metadata=AUTH),
            grpc.StatusCode.INTERNAL,
        )
    assert err.details().startswith("internal error in the mixer")
    incident = err.details().rsplit(" ", 1)[-1]
    assert "duckdb" not in err.details().lower()
    assert any(incident in r.getMessage() and r.exc_info for r in caplog.records)


async def test_calls_need_the_bearer_token(
    racks: racks_pb2_grpc.RackServiceStub, gears: gears_pb2_grpc.GearServiceStub
) -> None:
    err = await rpc_error(
        racks.ListRacks(racks_pb2.ListRacksRequest()), grpc.StatusCode.UNAUTHENTICATED
    )
    assert "authorization: Bearer" in err.details()
    assert trailers(err)[ERROR_CODE_KEY] == "unauthenticated"
    for metadata in ((("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        await rpc_error(
            gears.ListGears(gears_pb2.ListGearsRequest(), metadata=metadata),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    stream = racks.WatchRacks(racks_pb2.WatchRacksRequest(include_current=True))
    async with asyncio.timeout(BOUND):
        await rpc_error(stream.read(), grpc.StatusCode.UNAUTHENTICATED)


async def test_insecure_mixer_needs_no_token(ctx: ApiContext) -> None:
    insecure = dataclasses.replace(ctx, auth_token=None)
    async with (
        GrpcApi(insecure, "127.0.0.1", 0) as server,
        grpc.aio.insecure_channel(server.target) as ch,
    ):
        reply = await gears_pb2_grpc.GearServiceStub(ch).ListGears(gears_pb2.ListGearsRequest())
        assert reply.gears


async def test_health_needs_no_token(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICES):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the standard servicer's own answer
        await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    async with asyncio.timeout(BOUND):
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert names == {
        "fluxrig.v1.RackService",
        "fluxrig.v1.ScenarioService",
        "fluxrig.v1.SpecService",
        "fluxrig.v1.GearService",
        "fluxrig.v1.TelemetryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
