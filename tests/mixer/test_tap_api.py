"""Live taps through the mixer's REST API (`GET /api/v1/racks/{name}/tap`): a real Mixer, a
real managed rack through its Snake and the hub, real aiohttp clients."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from mixer.api.http import OPERATIONS, ApiContext, TapAccess, build_app
from mixer.api.http.openapi import build_document
from mixer.api.http.taps import GATEWAY
from rack.natsd import NatsServer
from tests.mixer.fleet import until
from tests.mixer.tapping import (
    READ,
    WIRE,
    SlowClient,
    bearer,
    error_of,
    fleet,
    next_line,
    read_all,
    tap,
)


async def test_the_stream_shows_a_wire_and_ends_at_its_limit(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f, tap(f, wire="gen.out->sink.in", limit=3) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/x-ndjson"
        lines = await read_all(resp)
        first, *records, last = lines
        assert first["type"] == "tap"
        assert first["rack"] == "edge-a"
        assert first["wire"] == WIRE
        assert [r["type"] for r in records] == ["msg"] * 3
        assert all(r["wire"] == WIRE and r["raw"].startswith("message ") for r in records)
        assert records[0]["flux_id"].isdigit()
        assert last["type"] == "end"
        assert last["reason"] == "limit reached"
        assert (last["sent"], last["published"], last["dropped_by_mixer"]) == (3, 3, 0)
        assert last["filter_errors"] == 0
        await until(lambda: not f.taps)  # nothing left on the rack


async def test_a_filter_runs_on_the_rack(tmp_path: Path) -> None:
    async with (
        fleet(tmp_path) as f,
        tap(f, wire="gen", filter="raw.endsWith('7')", limit=2, rate=1000) as resp,
    ):
        lines = await read_all(resp)
        records = [line for line in lines if line["type"] == "msg"]
        assert [r["raw"][-1] for r in records] == ["7", "7"]
        assert lines[-1]["filtered"] > 0


async def test_refusals_say_what_is_wrong(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f:
        async with tap(f, token=READ, wire=WIRE) as resp:  # payloads: not for the read token
            error = await error_of(resp, 403)
            assert error["code"] == "forbidden"
            assert "admin token" in error["message"]
            assert "payloads" in error["message"]
            assert READ not in error["message"]
        async with tap(f, token="not-a-token-at-all", wire=WIRE) as resp:
            await error_of(resp, 401)
        async with tap(f, rack="nowhere", wire=WIRE) as resp:
            assert (await error_of(resp, 404))["code"] == "rack_not_found"
        async with tap(f, wire="gen.out→x.in") as resp:
            error = await error_of(resp, 400)
            assert error["code"] == "invalid_parameter"
            assert "no wire 'gen.out→x.in'" in error["message"]
            assert f"known: {WIRE}" in error["message"]
            assert [d["path"] for d in error["details"]] == ["query.wire"]
        async with tap(f, wire=WIRE, filter="data.x >") as resp:
            error = await error_of(resp, 400)
            assert "filter does not compile" in error["message"]
            assert [d["path"] for d in error["details"]] == ["query.filter"]
        bad = ({"wire": WIRE, "limit": 0}, {"wire": WIRE, "rate": "fast"}, {"wire": ""}, {})
        for params in (*bad, {"wire": WIRE, "colour": "red"}):
            async with tap(f, **params) as resp:
                assert (await error_of(resp, 422))["code"] == "invalid_request"
        f.mixer.registry.hello("pending-rack")
        async with tap(f, rack="pending-rack", wire=WIRE) as resp:
            error = await error_of(resp, 503)
            assert "rack 'pending-rack' is pending" in error["message"]
        assert not f.taps


async def test_an_active_rack_that_does_not_answer_is_503(
    ctx: ApiContext, nats_server: NatsServer
) -> None:
    ctx.registry.hello("ghost")
    ctx.registry.adopt("ghost")
    access = TapAccess(nats_server.url, answer_timeout=0.5)
    app = build_app(ApiContext(ctx.store, ctx.registry, ctx.gears, auth_token=ctx.auth_token,
                               taps=access))  # fmt: skip
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/racks/ghost/tap", params={"wire": WIRE}, headers=bearer())
        error = await error_of(resp, 503)
        assert "rack 'ghost' did not answer the tap request (nobody listens)" in error["message"]
        assert "Snake" in error["message"]
        assert not app[GATEWAY].sessions  # its place is free again
    without_hub = build_app(ctx)
    async with TestClient(TestServer(without_hub)) as client:
        resp = await client.get("/api/v1/racks/ghost/tap", params={"wire": WIRE}, headers=bearer())
        assert "no connection to the mixer's hub" in (await error_of(resp, 503))["message"]


async def test_a_client_that_leaves_stops_the_tap(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f, tap(f, wire=WIRE) as resp:
        assert (await next_line(resp))["type"] == "tap"
        assert (await next_line(resp))["type"] == "msg"
        assert len(f.taps) == 1
        resp.close()  # the connection goes; the mixer stops the tap
        await until(lambda: not f.taps)


async def test_at_most_max_taps_run_through_the_api(tmp_path: Path) -> None:
    async with fleet(tmp_path, max_taps=1) as f, tap(f, wire=WIRE) as first:
        assert (await next_line(first))["type"] == "tap"
        async with tap(f, wire="gen") as second:
            error = await error_of(second, 503)
            assert "[api] max_taps = 1" in error["message"]
        assert len(f.taps) == 1
    async with fleet(tmp_path / "none", max_taps=0) as f, tap(f, wire=WIRE) as resp:
        assert "[api] max_taps = 0" in (await error_of(resp, 503))["message"]


async def test_the_mixer_stopping_ends_the_stream(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f, tap(f, wire=WIRE) as resp:
        assert (await next_line(resp))["type"] == "tap"
        await f.mixer.aclose()  # the REST API first: its taps end, stopped on the rack
        lines = await read_all(resp)
        assert lines[-1]["type"] == "end"
        assert lines[-1]["reason"] == "mixer stopping"
        await until(lambda: not f.taps)


LIMIT = 2000  # records of 4 KiB: far more than the sockets between mixer and client hold


async def test_a_client_that_reads_nothing_never_slows_the_wire(tmp_path: Path) -> None:
    rate = 4000
    gen = {"rate": rate, "size": 4096}
    async with fleet(tmp_path, gen=gen, tap_buffer=8) as f:
        path = f.path(wire=WIRE, limit=LIMIT, rate=10_000)
        async with SlowClient(f.url, path) as client:
            await until(lambda: len(f.taps) == 1)
            (running,) = f.taps.values()
            start, t0 = f.sink.count, time.monotonic()
            await until(lambda: running.ended is not None)  # the rack published LIMIT records
            took = time.monotonic() - t0
            assert f.sink.count - start >= 0.5 * rate * took  # the wire went on at its pace
            await until(lambda: f.sink.count >= start + rate)  # and goes on
            lines = await client.lines()  # now the client reads
        records = [line for line in lines if line["type"] == "msg"]
        end = lines[-1]
        assert end["type"] == "end"
        assert end["reason"] == "limit reached"
        assert end["published"] == LIMIT
        assert end["dropped_by_mixer"] > 0  # what the client could not take, counted
        assert end["sent"] == len(records)
        assert end["sent"] + end["dropped_by_mixer"] == LIMIT
        assert all(len(r["raw"]) == 4096 for r in records)


def test_the_document_declares_a_stream_for_the_admin_token() -> None:
    doc = build_document(OPERATIONS, version="test", secure=True)
    route = doc["paths"]["/api/v1/racks/{name}/tap"]["get"]
    assert set(route["responses"]) == {"200", "400", "401", "403", "404", "422", "503"}
    assert list(route["responses"]["200"]["content"]) == ["application/x-ndjson"]
    assert "payloads" in route["description"]
    assert [p["name"] for p in route["parameters"]] == ["name", "wire", "filter", "limit", "rate"]
