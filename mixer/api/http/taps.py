"""Live taps over REST: `GET /racks/{name}/tap?wire=W&filter=EXPR&limit=N&rate=N`, NDJSON.

    curl -N -H "Authorization: Bearer $ADMIN_TOKEN" \\
        "http://127.0.0.1:8090/api/v1/racks/edge-1/tap?wire=gen.out&limit=20"

The mixer opens the tap on the rack over its own connection to the hub (`rack.tap.client`: the
protocol `fluxrig tail` speaks), renews its lease while the HTTP client stays, and stops it as
soon as the client leaves, the rack ends it (`limit` reached, wire removed, ...) or the mixer
stops. The stream (`mixer.api.http.tap_models`): a state line once the tap is open and after
every lease renewal, one record per tapped message as the rack wrote it, and a last line with
why it ended and the counts.

Admin token only: a tap shows the messages themselves — payloads, card numbers on a payment
switch — where the read-only token sees metrics, logs and traces.

Bounds: at most `[api] max_taps` sessions per mixer (503 past that). Per session, at most
`[api] tap_buffer` records wait for the HTTP client; past that they are dropped and counted
(`dropped_by_mixer`): a client that reads slowly, or not at all, never slows the mixer's hub
connection, the rack or the wire. aiohttp does not cancel a handler whose client left, and a
write only notices at the next record, so a watcher checks the connection every
`WATCH_EVERY` seconds (an idle or filtered tap may have no record for long).

Errors before the stream starts: 404 unknown rack; 503 the rack is not active, does not answer
within the timeout, refuses more taps, or the mixer has no hub connection or runs `max_taps`
taps; 400 an unknown wire or a filter that does not compile (`details` name `query.wire` /
`query.filter`); 422 a query that breaks its schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from nats.aio.client import Client
from pydantic import BaseModel

from mixer import hub_client
from mixer.api.errors import Detail, InvalidParameterError, ServiceUnavailableError
from mixer.api.http.context import ApiContext, TapAccess
from mixer.api.http.operation import Call, Operation
from mixer.api.http.tap_models import TapEnd, TapLine, TapQuery, TapState
from mixer.registry import RackStatus
from rack.tap.client import NATS_ERRORS, TapClient, TapUnanswered
from rack.tap.protocol import TapError, TapRequest
from rack.tap.record import VARIABLES

__all__ = ["GATEWAY", "OPERATIONS", "TapGateway", "install"]

log = logging.getLogger("fluxrig.mixer.taps")

NDJSON = "application/x-ndjson"
LEASE = 10.0  # seconds the rack keeps a tap without a renewal (renewed every third of it)
WATCH_EVERY = 0.25  # seconds between two looks at the HTTP connection
GRACE = 2.0  # seconds sessions get to end when the mixer stops, before their clients are cut off
END_WRITE = 5.0  # seconds a client gets to take the last line, before it is cut off
GONE = "client disconnected"
STOPPING = "mixer stopping"
WHY_ADMIN = (
    "a tap shows the messages crossing a wire, payloads included (card data on a payment "
    "switch), where the read-only token sees metrics, logs and traces"
)


class TapGateway:
    """The API's taps of one application: its hub connection (the mixer's own user) and the
    sessions running on it, at most `max_taps`."""

    def __init__(self, access: TapAccess | None) -> None:
        self.access = access
        self.sessions: dict[TapClient, web.Request] = {}
        self._nc: Client | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the hub connection lives as long as the application."""
        if self.access is not None:
            self._nc = await hub_client.connect(self.access.hub_url, "API taps")
        try:
            yield
        finally:
            nc, self._nc = self._nc, None
            await hub_client.drain(nc, "API taps")

    async def shutdown(self, app: web.Application) -> None:
        """aiohttp on_shutdown (before it waits for handlers): end every session; cut off the
        clients that do not read within `GRACE` seconds."""
        self._stopping = True
        for tap in list(self.sessions):
            tap.interrupt(STOPPING)
        if await self._idle_within(GRACE):
            return
        for http in list(self.sessions.values()):
            if http.transport is not None:
                http.transport.abort()
        await self._idle_within(GRACE)

    @asynccontextmanager
    async def session(
        self, rack: str, request: TapRequest, http: web.Request
    ) -> AsyncIterator[TapClient]:
        """An open tap on `rack` for the HTTP request `http`; stopped and unsubscribed at exit.
        Raises the API's errors (503, 400) when it cannot be opened."""
        access, nc = self.access, self._nc
        if access is None or nc is None:
            raise ServiceUnavailableError(
                "live taps are not available: this API has no connection to the mixer's hub"
            )
        if self._stopping:
            raise ServiceUnavailableError("the mixer is stopping: no new taps")
        if access.max_taps == 0:
            raise ServiceUnavailableError("live taps through the API are off ([api] max_taps = 0)")
        if len(self.sessions) >= access.max_taps:
            raise ServiceUnavailableError(
                f"{len(self.sessions)} taps already run through this mixer's API ([api] max_taps "
                f"= {access.max_taps}): end one, or raise [api] max_taps"
            )
        tap = TapClient(
            nc, rack, request, pending=access.buffer, answer_timeout=access.answer_timeout
        )
        self.sessions[tap] = http
        self._idle.clear()
        try:
            await _open(tap)
            log.info("tap %s on rack %r (%s) opened for %s", tap.id, rack, tap.counts.wire,
                     http.remote)  # fmt: skip
            yield tap
        finally:
            await tap.aclose()
            del self.sessions[tap]
            if not self.sessions:
                self._idle.set()

    async def _idle_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return self._idle.is_set()


GATEWAY = web.AppKey("taps", TapGateway)


def install(app: web.Application, access: TapAccess | None) -> None:
    """Give `app` its tap gateway: hub connection with the app, sessions ended at shutdown."""
    gateway = TapGateway(access)
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.lifespan)
    app.on_shutdown.append(gateway.shutdown)


async def _open(tap: TapClient) -> None:
    rack = tap.rack
    try:
        await tap.open(patient=True)  # a Snake that just connected may not be known yet
    except TapError as exc:
        raise _refused(rack, exc) from None
    except TapUnanswered as exc:
        if tap.finished.is_set():  # interrupted while waiting: the mixer stops
            raise ServiceUnavailableError(f"no tap on rack '{rack}': {tap.counts.ended}") from None
        raise ServiceUnavailableError(
            f"rack '{rack}' did not answer the tap request {exc.how} through the hub: is it "
            f"running and connected (its Snake)? `fluxrig racks show {rack}`"
        ) from None
    except NATS_ERRORS as exc:
        raise ServiceUnavailableError(
            f"cannot reach rack '{rack}': the mixer's hub connection failed ({exc!r}); retry"
        ) from None


def _refused(rack: str, exc: TapError) -> Exception:
    message = f"rack '{rack}' refused the tap: {exc}"
    if exc.code == "unknown_wire":
        return InvalidParameterError(message, [Detail("query.wire", "not a wire of this rack")])
    if exc.code == "bad_filter":
        where = f"expected a CEL condition over {', '.join(VARIABLES)}"
        return InvalidParameterError(message, [Detail("query.filter", where)])
    if exc.code == "bad_request":
        return InvalidParameterError(message, [Detail("query", str(exc))])
    return ServiceUnavailableError(message)  # too_many_taps (the rack's max_taps), stopping


# --- the stream ---------------------------------------------------------------------------------


class TapStream:
    """Writes one session to its HTTP client."""

    def __init__(self, http: web.Request, response: web.StreamResponse, tap: TapClient) -> None:
        self.http = http
        self.response = response
        self.tap = tap
        self.sent = 0

    async def run(self) -> None:
        """Answer 200, then the state and the records as they come, until the session is over;
        never raises (but CancelledError): once the answer has begun, a failure can only end
        it."""
        tap = self.tap
        try:
            await self.response.prepare(self.http)
        except ConnectionError:
            tap.interrupt(GONE)
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(tap.keep_alive())
                tg.create_task(self._watch())
                await self._forward()
        except Exception:
            log.exception("tap %s on rack %r failed", tap.id, tap.rack)
            tap.interrupt("failed in the mixer (see its log)")

    async def _forward(self) -> None:
        tap, response = self.tap, self.response
        try:
            await response.write(self._line(TapState))
            while (event := await tap.next()) is not None:
                if event.kind == "msg":
                    await response.write(event.data + b"\n")
                    self.sent += 1
                else:
                    await response.write(self._line(TapState))
        except ConnectionError:
            tap.interrupt(GONE)

    async def _watch(self) -> None:
        tap = self.tap
        while not tap.finished.is_set():
            transport = self.http.transport
            if transport is None or transport.is_closing():
                tap.interrupt(GONE)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_EVERY):  # a poll: no event says "client left"
                    await tap.finished.wait()

    async def end(self) -> None:
        """The last line (after the tap was stopped: final counts); a client that does not take
        it within `END_WRITE` seconds is cut off."""
        tap = self.tap
        c = tap.counts
        log.info(
            "tap %s on rack %r (%s) ended: %s; %d sent, %d dropped by the rack, %d by the mixer",
            tap.id, tap.rack, c.wire, c.ended, self.sent, c.dropped, c.local_dropped,
        )  # fmt: skip
        if c.ended == GONE:
            return
        try:
            async with asyncio.timeout(END_WRITE):
                await self.response.write(self._line(TapEnd, reason=c.ended or "ended"))
        except ConnectionError:
            pass
        except TimeoutError:
            if self.http.transport is not None:
                self.http.transport.abort()

    def _line(self, model: type[TapState] | type[TapEnd], **extra: str) -> bytes:
        tap = self.tap
        line: BaseModel = model.of(tap.rack, tap.id, tap.counts, self.sent, **extra)
        return line.model_dump_json().encode() + b"\n"


async def tap_wire(ctx: ApiContext, call: Call) -> web.StreamResponse:
    query, rack = call.query_as(TapQuery), call.path["name"]
    gateway = call.request.app[GATEWAY]
    record = await asyncio.to_thread(ctx.registry.get, rack)
    if record.status is not RackStatus.ACTIVE:
        raise ServiceUnavailableError(
            f"rack '{rack}' is {record.status.value}: only an active rack, connected to the hub, "
            "can be tapped"
        )
    request = TapRequest(
        wire=query.wire, filter=query.filter, limit=query.limit, rate=query.rate, lease=LEASE
    )
    response = web.StreamResponse(headers={"Cache-Control": "no-store"})
    response.content_type = NDJSON
    async with gateway.session(rack, request, call.request) as tap:
        stream = TapStream(call.request, response, tap)
        await stream.run()
    await stream.end()  # after the stop: the rack's final counts
    return response


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/racks/{name}/tap",
        operation_id="tapWire",
        summary="Stream the messages crossing a wire of a rack, live (NDJSON).",
        description=(
            "Opens a tap on the rack through the mixer's hub and streams one JSON line per "
            "tapped message, a state line when the tap opened and every few seconds, and a "
            "last line with why it ended and the counts. The rack drops what the tap cannot "
            "take and the mixer drops what this client cannot read (both counted); the wire is "
            "never slowed. The tap stops when the client disconnects, at `limit`, or when the "
            f"mixer stops. Admin token only: {WHY_ADMIN}."
        ),
        tag="racks",
        handler=tap_wire,
        responses={200: TapLine},
        errors=(400, 404, 503),
        query=TapQuery,
        admin_only=WHY_ADMIN,
        media_type=NDJSON,
    ),
)
