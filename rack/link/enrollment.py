"""The rack's side of enrollment: say hello to the mixer, keep heartbeating, learn the status.

    async with MixerLink("nats://mixer:4222", "edge-1") as link:   # never blocks, never raises
        ...                                                        # the rack runs meanwhile
        await link.wait_until(lambda l: l.status == "active")

Protocol (`rack.link.protocol`): a request on `fluxrig.agent.hello`; the reply gives the
rack's status, MachineID, fluxEntityID and heartbeat interval; then a heartbeat on
`fluxrig.event.heartbeat.<name>` every interval; status changes arrive on
`fluxrig.rack.<name>.status`, scenario pushes on `fluxrig.rack.<name>.scenario` (kept in `push`,
the newest one wins; `rack.link.agent.ScenarioAgent` applies them and answers with `ack`), and
passports on `fluxrig.rack.<name>.passport` (verified against the pinned mixer key and kept by
`identity`, a `rack.link.identity.RackIdentity`). The hello and every heartbeat say which
scenario the rack runs (`running()`, a CAS digest) and which passport it holds; the hello also
carries the bootstrap `token`, the rack's public key and its CSR.

Failure handling: the link never raises into the rack. It retries with exponential back-off
(`backoff_initial` doubling to `backoff_max`) when the mixer's NATS is unreachable, when nobody
answers the hello, and when the mixer refuses it (name conflict, retired name: an operator must
act, so it retries slowly and says so). Each state change is logged once; repeats go to DEBUG.
After the connection drops it reconnects and says hello again (the mixer may have restarted).

With a `snake` (`rack.link.snake.Snake`, what `fluxrig run --mixer-url` uses), the link has two
modes. Without a certificate it talks to the hub's client port as the anonymous enrollment user,
which may only say hello: it says hello every heartbeat interval (the reply tells its status)
until the reply of an adopted rack carries its certificate; then it opens the Snake and, from
then on, connects to the rack's own nats-server, whose leaf connection reaches the hub over mTLS,
with replies on `_INBOX.<name>.>`. When the leaf connection drops, the session ends ("lost the
connection to the mixer") and a new one starts (hello first) once the leaf is back. Without a
snake (tests, tools) the link uses `url` directly for everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from rack import __version__
from rack.errors import NatsServerError, PassportError
from rack.lifecycle import Service
from rack.link.identity import RackIdentity, state_of
from rack.link.protocol import (
    HELLO_SUBJECT,
    MAX_SCENARIO_PAYLOAD,
    ErrorBody,
    Heartbeat,
    Hello,
    HelloAttributes,
    HelloReply,
    KillSwitch,
    ProtocolError,
    ScenarioAck,
    ScenarioPush,
    StatusUpdate,
    applied_subject,
    decode,
    encode,
    error_of,
    heartbeat_subject,
    inbox_prefix,
    kill_subject,
    passport_subject,
    scenario_subject,
    status_subject,
)
from rack.link.snake import Snake, leaf_url
from rack.link.stats import ProcessSampler
from rack.model.passport import Passport

__all__ = ["LinkState", "MixerLink"]

log = logging.getLogger("fluxrig.link")

SNAKE_SETTLE = 5.0  # seconds a new leaf gets to connect and learn the hub's interest, quietly


class LinkState(enum.StrEnum):
    """Where the link is; the rack's registry status is `MixerLink.status`, a separate thing."""

    CONNECTING = "connecting"
    UNREACHABLE = "unreachable"  # the mixer's NATS does not accept connections
    NO_MIXER = "no_mixer"  # NATS answers, the enrollment service does not
    REFUSED = "refused"  # the mixer refused the hello (see `error`)
    ENROLLED = "enrolled"
    CLOSED = "closed"


class _Backoff:
    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum, self._next = initial, maximum, initial

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class MixerLink(Service):
    """One rack's enrollment link to the mixer. `aclose()` is idempotent.

    Observable state (for the rack and tests): `state`, `status` (the registry status, None
    until the first reply), `machine_id`, `entity_id`, `heartbeat_interval`, `error` (the last
    refusal), `hellos` and `heartbeats` (how many were sent), `status_updates` (how many status
    messages arrived), `push` and `pushes` (the newest scenario push, how many arrived);
    `wait_until(predicate)` waits for a change that satisfies `predicate`.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        version: str = __version__,
        public_key: str | None = None,
        gears: Callable[[], int] | None = None,
        running: Callable[[], str | None] | None = None,
        token: str | None = None,
        identity: RackIdentity | None = None,
        snake: Snake | None = None,
        request_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.url, self.name = url, name
        self.hello = Hello(
            name=name,
            version=version,
            attributes=HelloAttributes(
                hostname=socket.gethostname(),
                pid=os.getpid(),
                python=platform.python_version(),
                public_key=identity.public_key if identity is not None else public_key,
            ),
            token=token,
            csr=identity.csr_pem if identity is not None else None,
        )
        self.state = LinkState.CONNECTING
        self.status: str | None = None
        self.machine_id: int | None = None
        self.entity_id: int | None = None
        self.heartbeat_interval: float | None = None
        self.error: ErrorBody | None = None
        self.hellos = 0
        self.heartbeats = 0
        self.status_updates = 0
        self.push: ScenarioPush | None = None
        self.pushes = 0
        self.identity = identity
        self.snake = snake
        self.reply: HelloReply | None = None  # the last accepted hello reply
        self.killed = False  # the kill switch fired
        self.passport: Passport | None = None  # the newest valid one (set it at boot too)
        self.passports = 0  # passports received and kept
        self._running = running
        self._nc: Client | None = None
        self._gears = gears
        self._request_timeout = request_timeout
        self._backoff = _Backoff(backoff_initial, backoff_max)
        self._sampler = ProcessSampler()
        self._said: tuple[LinkState, str] | None = None
        self._settle_until = 0.0  # monotonic time the quiet time after the Snake opened ends
        self._changed = asyncio.Event()
        self._stack: AsyncExitStack | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start enrolling in the background; returns at once."""
        if self._stack is not None:
            raise RuntimeError("the mixer link is already started")
        self._stack = stack = AsyncExitStack()
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        self._task = tasks.create_task(self._run(), name=f"mixer-link {self.name}")
        stack.callback(self._cancel)  # runs before the TaskGroup exits

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        await stack.aclose()
        self._set_state(LinkState.CLOSED, "", logging.DEBUG)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait_until(
        self, predicate: Callable[[MixerLink], bool], timeout: float | None = None
    ) -> None:
        """Wait until `predicate(link)` holds (checked after every change of the link)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                changed = self._changed
                await changed.wait()

    # -- the loop ---------------------------------------------------------------------------------

    @property
    def via_snake(self) -> bool:
        """Whether the link goes through the rack's Snake (else: the hub's client port)."""
        return self.snake is not None and self.snake.is_open

    def _target(self) -> str:
        return self.snake.url if self.snake is not None and self.snake.is_open else self.url

    async def _run(self) -> None:
        if self.snake is not None and self.snake.is_open:  # started with its certificate
            self._settle_until = time.monotonic() + SNAKE_SETTLE
        while True:
            snake = self.snake
            if (
                snake is not None
                and snake.is_open
                and not snake.hub_up
                and not await self._hub_within(self._settling_left())  # a new leaf: quietly
            ):
                self._set_state(
                    LinkState.UNREACHABLE,
                    f"the Snake to the hub at {snake.hub_url} is down; nats-server retries it, "
                    "the rack runs on",
                    logging.WARNING,
                )
                await snake.wait_hub(True)
            nc, closed = await self._connect()
            try:
                if await self._session(nc, closed):
                    continue  # the Snake just opened: straight through it
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()
            self._set_state(
                LinkState.CONNECTING,
                f"lost the connection to the mixer at {self._where()}; reconnecting",
                logging.WARNING,
            )
            await asyncio.sleep(self._backoff.next())  # a retry delay, not synchronisation

    async def _connect(self) -> tuple[Client, asyncio.Event]:
        """Connect to the mixer's NATS, retrying with back-off for as long as it takes."""
        while True:
            closed = asyncio.Event()
            causes: list[str] = []
            try:
                nc = await self._dial(closed, causes)
            except (OSError, TimeoutError, NatsError) as exc:
                cause = causes[-1] if causes else str(exc) or type(exc).__name__
                delay = self._backoff.next()
                self._set_state(
                    LinkState.UNREACHABLE,
                    f"cannot reach the mixer's NATS at {self._target()} ({cause}); retrying with "
                    f"back-off up to {self._backoff.maximum:g}s",
                    logging.WARNING,
                )
                await asyncio.sleep(delay)  # a retry delay, not synchronisation
                continue
            return nc, closed

    async def _dial(self, closed: asyncio.Event, causes: list[str]) -> Client:
        async def on_error(exc: Exception) -> None:
            causes.append(str(exc) or type(exc).__name__)

        async def on_closed() -> None:
            closed.set()

        return await nats.connect(
            self._target(),
            name=f"fluxrig-rack {self.name}",
            inbox_prefix=inbox_prefix(self.name) if self.via_snake else "_INBOX",
            connect_timeout=self._request_timeout,
            allow_reconnect=False,  # _connect reconnects, with back-off and a new hello
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=on_error,
            closed_cb=on_closed,
            disconnected_cb=on_closed,
        )

    def _where(self) -> str:
        return f"{self.snake.hub_url} (Snake)" if self.via_snake and self.snake else self.url

    async def _session(self, nc: Client, closed: asyncio.Event) -> bool:
        """One connection's life; True when it ends because the Snake just opened."""
        if self.snake is not None and not self.snake.is_open:
            return await self._enroll_anonymously(nc, closed)
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(self._watch_snake(closed)) if self.via_snake else None
            try:
                await self._full_session(nc, closed)
            finally:
                if watch is not None:
                    watch.cancel()
        return False

    async def _watch_snake(self, closed: asyncio.Event) -> None:
        assert self.snake is not None
        await self.snake.wait_hub(False)
        closed.set()  # the hub is away: this session is over

    async def _enroll_anonymously(self, nc: Client, closed: asyncio.Event) -> bool:
        """No certificate yet: hello (all the anonymous user may do) every heartbeat interval
        until the reply carries the certificate; then open the Snake."""
        self._nc = nc
        try:
            while await self._enroll(nc, closed):
                reply, snake = self.reply, self.snake
                assert reply is not None
                assert snake is not None
                if reply.certificate and reply.ca and reply.leafnode_port:
                    try:
                        await snake.open(
                            leaf_url(self.url, reply.leafnode_port), reply.certificate, reply.ca
                        )
                    except (PassportError, NatsServerError) as exc:
                        log.error("cannot open the Snake: %s", exc)
                    else:
                        self._settle_until = time.monotonic() + SNAKE_SETTLE
                        return True
                if await _closed_within(closed, reply.heartbeat_interval):
                    break
        finally:
            self._nc = None
        return False

    async def _full_session(self, nc: Client, closed: asyncio.Event) -> None:
        await nc.subscribe(kill_subject(self.name), cb=self._on_kill)
        await nc.subscribe(status_subject(self.name), cb=self._on_status)
        await nc.subscribe(
            scenario_subject(self.name), cb=self._on_scenario, pending_bytes_limit=16 * 1024**2
        )
        if self.identity is not None:
            await nc.subscribe(
                passport_subject(self.name), cb=self._on_passport, pending_bytes_limit=16 * 1024**2
            )
        self._nc = nc
        try:
            if await self._enroll(nc, closed):
                await self._heartbeat(nc, closed)
        finally:
            self._nc = None

    async def ack(self, ack: ScenarioAck) -> bool:
        """Tell the mixer whether a push was applied; False when the link is down (the next
        hello says what the rack runs, and the mixer pushes again if needed)."""
        nc = self._nc
        if nc is None or nc.is_closed:
            log.warning("cannot tell the mixer about activation %d: not connected", ack.activation)
            return False
        try:
            await nc.publish(applied_subject(self.name), encode(ack))
        except NatsError as exc:
            log.warning("cannot tell the mixer about activation %d: %s", ack.activation, exc)
            return False
        return True

    def _scenario(self) -> str | None:
        return self._running() if self._running is not None else None

    async def _enroll(self, nc: Client, closed: asyncio.Event) -> bool:
        """Say hello until the mixer accepts it (True) or the connection closes (False)."""
        while not closed.is_set():
            self.hellos += 1
            try:
                hello = self.hello.model_copy(
                    update={"scenario": self._scenario(), "passport": state_of(self.passport)}
                )
                msg = await nc.request(HELLO_SUBJECT, encode(hello), timeout=self._request_timeout)
            except NoRespondersError:
                self._no_mixer("no mixer enrollment service listens there")
            except TimeoutError:
                self._no_mixer(f"no answer to hello within {self._request_timeout:g}s")
            except NatsError:
                return False  # the connection is closing: reconnect
            else:
                if self._accept(msg.data):
                    return True
                if self.error is not None and self.error.code in ("retired", "revoked"):
                    await self._revoked(f"the mixer refused the hello: {self.error.code}")
            if await _closed_within(closed, self._backoff.next()):
                return False
        return False

    def _accept(self, data: bytes) -> bool:
        error = error_of(data)
        if error is not None:
            self.error = error
            self._set_state(
                LinkState.REFUSED,
                f"the mixer refused this rack's hello as '{self.name}' ({error.code}): "
                f"{error.message}; retrying with back-off up to {self._backoff.maximum:g}s",
                logging.ERROR,
            )
            return False
        try:
            reply = decode(HelloReply, data, "hello reply")
        except ProtocolError as exc:
            self._no_mixer(f"unusable reply: {exc}")
            return False
        self.error = None
        news = self.state is not LinkState.ENROLLED or self.status != reply.status
        self.reply = reply
        self.machine_id, self.entity_id = reply.machine_id, reply.entity_id
        self.heartbeat_interval, self.status = reply.heartbeat_interval, reply.status
        self._backoff.reset()
        self._set_state(
            LinkState.ENROLLED,
            f"enrolled with the mixer as '{self.name}' (machine id {reply.machine_id}, "
            f"status {reply.status})",
            logging.INFO,
            force=news,
        )
        return True

    async def _heartbeat(self, nc: Client, closed: asyncio.Event) -> None:
        interval = self.heartbeat_interval or 5.0
        subject = heartbeat_subject(self.name)
        while not await _closed_within(closed, interval):
            gears = self._gears() if self._gears is not None else None
            beat = Heartbeat(
                name=self.name,
                ts=time.time(),
                status=self.status,
                scenario=self._scenario(),
                passport=state_of(self.passport),
                stats=self._sampler.sample(gears),
            )
            try:
                await nc.publish(subject, encode(beat))
            except NatsError:
                return
            self.heartbeats += 1
            self._touch()

    async def _on_status(self, msg: Msg) -> None:
        try:
            update = decode(StatusUpdate, msg.data, "status update")
        except ProtocolError as exc:
            log.warning("ignored a malformed status update from the mixer: %s", exc)
            return
        if self.status is not None and update.status != self.status:
            log.info(
                "the mixer changed this rack's status: %s -> %s (machine id %d)",
                self.status or "unknown",
                update.status,
                update.machine_id,
            )
        self.status, self.machine_id = update.status, update.machine_id
        self.status_updates += 1
        self._touch()

    async def _on_kill(self, msg: Msg) -> None:
        """The kill switch: the mixer revoked this rack. Stop every gear (status `retired`),
        forget the passport (a restart must not run it again) and close the Snake."""
        try:
            reason = decode(KillSwitch, msg.data, "kill switch").reason
        except ProtocolError as exc:
            reason = f"revoked (unreadable detail: {exc})"
        await self._revoked(f"kill switch from the mixer ({reason})")

    async def _revoked(self, why: str) -> None:
        """This rack was revoked (kill switch, or a hello refused as retired/revoked — in case
        the kill switch was lost): stop every gear, forget passport and certificate, close the
        Snake. Idempotent."""
        if self.killed:
            return
        log.critical("%s: stopping every gear, dropping the passport and the certificate", why)
        self.status, self.passport, self.killed = "retired", None, True
        self._touch()
        if self.identity is not None:
            await asyncio.to_thread(self.identity.forget)
        if self.snake is not None:
            try:
                await self.snake.close_hub()
            except NatsServerError as exc:
                log.error("cannot close the Snake: %s", exc)

    async def _on_scenario(self, msg: Msg) -> None:
        try:
            push = decode(ScenarioPush, msg.data, "scenario push", limit=MAX_SCENARIO_PAYLOAD)
        except ProtocolError as exc:
            log.warning("ignored a malformed scenario push from the mixer: %s", exc)
            return
        log.info(
            "the mixer pushed %s (activation %d%s)",
            push.ref or push.digest or "no scenario", push.activation,
            ", rollback" if push.rollback else "",
        )  # fmt: skip
        self.push = push
        self.pushes += 1
        self._touch()

    async def _on_passport(self, msg: Msg) -> None:
        identity = self.identity
        assert identity is not None
        try:
            passport = await asyncio.to_thread(identity.store, msg.data, now=time.time())
        except (PassportError, OSError) as exc:
            log.error("refused a passport from the mixer: %s", exc)
            return
        if self.snake is not None and passport.cert is not None:
            await self.snake.renewed(passport.cert)
        self.passport = passport
        self.passports += 1
        log.info(
            "passport kept (machine id %d, scenario %s, valid until %s)",
            passport.machine_id,
            passport.scenario.digest if passport.scenario else "none",
            time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(passport.expires_at)),
        )
        self._touch()

    # -- state ------------------------------------------------------------------------------------

    def _no_mixer(self, why: str) -> None:
        # Right after the Snake opened, the hub's interest may not have crossed the new leaf
        # yet: a hello without responders then is expected, not worth a warning.
        self._set_state(
            LinkState.NO_MIXER,
            f"the mixer at {self._where()} did not take this rack's hello: {why}; retrying with "
            f"back-off up to {self._backoff.maximum:g}s",
            logging.INFO if self._settling_left() else logging.WARNING,
        )

    def _settling_left(self) -> float:
        """Seconds left of the quiet time after the Snake opened (0 when none)."""
        return max(0.0, self._settle_until - time.monotonic())

    async def _hub_within(self, seconds: float) -> bool:
        """Whether the Snake's leaf to the hub is up within `seconds` (0: now)."""
        assert self.snake is not None
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.snake.wait_hub(True)
        return self.snake.hub_up

    def _set_state(self, state: LinkState, text: str, level: int, *, force: bool = False) -> None:
        """Record the state; log it once per change (repeats at DEBUG)."""
        self.state = state
        said = (state, text)
        if text:
            log.log(level if force or said != self._said else logging.DEBUG, "%s", text)
        self._said = said
        self._touch()

    def _touch(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


async def _closed_within(closed: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await closed.wait()
    return closed.is_set()
