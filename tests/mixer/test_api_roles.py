"""Roles of the API tokens over real HTTP and real gRPC: the admin token may do everything, the
read-only token only reads (403 / PERMISSION_DENIED otherwise), and no message names a token."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fluxrig.v1 import racks_pb2, racks_pb2_grpc

from mixer.api.credentials import Credentials, is_read_only_rpc
from mixer.api.grpc import GrpcApi
from mixer.api.http import ApiContext, build_app
from mixer.app import Mixer
from mixer.settings import MixerSettings
from rack.cli import main
from tests.mixer.documents import TOKEN

READ = "read-only-token-for-tests"


@pytest.fixture
def roles(ctx: ApiContext) -> ApiContext:
    ctx.registry.hello("rack-a")
    return dataclasses.replace(ctx, read_token=READ)


@pytest.fixture
async def http(roles: ApiContext) -> AsyncIterator[TestClient[object, object]]:
    async with TestClient(TestServer(build_app(roles))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_read_token_reads_but_may_not_change_anything_over_rest(
    http: TestClient[object, object],
) -> None:
    resp = await http.get("/api/v1/racks", headers=bearer(READ))
    assert resp.status == 200
    assert [r["name"] for r in (await resp.json())["racks"]] == ["rack-a"]
    resp = await http.post("/api/v1/racks/rack-a/adopt", headers=bearer(READ))
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == "forbidden"
    assert "read-only token" in body["error"]["message"]
    assert READ not in await resp.text()
    assert TOKEN not in await resp.text()
    resp = await http.post("/api/v1/racks/rack-a/adopt", headers=bearer(TOKEN))
    assert resp.status == 200  # the admin token may
    resp = await http.get("/api/v1/racks", headers=bearer("another-token-entirely"))
    assert resp.status == 401


async def test_the_document_declares_403_on_changes_only(
    http: TestClient[object, object],
) -> None:
    doc = await (await http.get("/api/v1/openapi.json")).json()
    adopt = doc["paths"]["/api/v1/racks/{name}/adopt"]["post"]["responses"]
    assert "403" in adopt
    assert "403" not in doc["paths"]["/api/v1/racks"]["get"]["responses"]


async def test_the_read_token_over_grpc(roles: ApiContext) -> None:
    async with (
        GrpcApi(roles, "127.0.0.1", 0) as server,
        grpc.aio.insecure_channel(server.target) as channel,
    ):
        stub = racks_pb2_grpc.RackServiceStub(channel)
        read = (("authorization", f"Bearer {READ}"),)
        listed = await stub.ListRacks(racks_pb2.ListRacksRequest(), metadata=read)
        assert [r.name for r in listed.racks] == ["rack-a"]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.AdoptRack(racks_pb2.RackRef(name="rack-a"), metadata=read)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "read-only token" in (refused.value.details() or "")
        admin = (("authorization", f"Bearer {TOKEN}"),)
        adopted = await stub.AdoptRack(racks_pb2.RackRef(name="rack-a"), metadata=admin)
        assert adopted.status == "active"


def test_read_only_rpcs_are_the_list_get_and_watch_ones() -> None:
    assert is_read_only_rpc("/fluxrig.v1.RackService/ListRacks")
    assert is_read_only_rpc("/fluxrig.v1.ScenarioService/GetActiveScenario")
    assert is_read_only_rpc("/fluxrig.v1.RackService/WatchRacks")
    assert not is_read_only_rpc("/fluxrig.v1.ScenarioService/ActivateScenario")
    assert not is_read_only_rpc("/fluxrig.v1.RackService/AdoptRack")


def test_tokens_must_differ_and_the_read_token_needs_an_admin_token() -> None:
    with pytest.raises(ValueError, match="differ"):
        Credentials(TOKEN, TOKEN)
    base = {"enrollment": {"bootstrap_token": "b" * 20}}
    with pytest.raises(ValueError, match="read_token must differ from auth_token"):
        MixerSettings.model_validate(base | {"api": {"auth_token": TOKEN, "read_token": TOKEN}})
    with pytest.raises(ValueError, match="read_token needs auth_token"):
        MixerSettings.model_validate(base | {"api": {"read_token": READ, "insecure": True}})
    settings = MixerSettings.model_validate(
        base | {"api": {"auth_token": TOKEN, "read_token": READ}}
    )
    assert settings.api.reader_token == READ
    assert READ not in repr(settings)


# -- TLS ----------------------------------------------------------------------------------------


async def test_apis_over_tls_with_the_cluster_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("FLUXRIG_API_URL", "FLUXRIG_API_TOKEN", "FLUXRIG_API_CA"):
        monkeypatch.delenv(key, raising=False)
    settings = MixerSettings.model_validate(
        {
            "mixer": {"state_dir": tmp_path / "m"},
            "hub": {"port": 0, "leafnodes": False},
            "api": {"port": 0, "grpc_port": 0, "auth_token": TOKEN, "tls": True},
            "telemetry": {"grpc_port": 0, "http_port": 0},
            "enrollment": {"bootstrap_token": "b" * 20},
        }
    )
    async with Mixer(settings) as mixer:
        assert mixer.api_url is not None
        assert mixer.api_url.startswith("https://")
        ca = tmp_path / "m" / "pki" / "ca.crt"
        args = ["racks", "list", "--api-url", mixer.api_url, "--api-token", TOKEN]
        code = await asyncio.to_thread(main, [*args, "--api-ca", str(ca)])
        assert code == 0, capsys.readouterr().err
        code = await asyncio.to_thread(main, args)  # the system's CAs do not know the cluster's
        assert code == 1
        assert "certificate verify failed" in capsys.readouterr().err
        assert mixer.grpc_target is not None
        credentials = grpc.ssl_channel_credentials(ca.read_bytes())
        async with grpc.aio.secure_channel(
            mixer.grpc_target.replace("127.0.0.1", "localhost"), credentials
        ) as channel:
            stub = racks_pb2_grpc.RackServiceStub(channel)
            auth = (("authorization", f"Bearer {TOKEN}"),)
            listed = await stub.ListRacks(racks_pb2.ListRacksRequest(), metadata=auth)
            assert list(listed.racks) == []


def test_tls_cert_and_key_come_together() -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key come together"):
        MixerSettings.model_validate({"api": {"insecure": True, "tls": True, "tls_cert": "/x.pem"}})
