"""The mixer's side of enrollment: answer racks' hellos, record heartbeats, announce statuses.

    async with Enrollment(hub_url, registry, settings.enrollment) as enrollment:
        await enrollment.notify(registry.adopt("edge-1"))   # tell the rack it was adopted

Subjects and messages are defined once, in `rack.link.protocol` (see docs/enrollment.md):

- `fluxrig.agent.hello` (queue group `mixer`): parse the hello, `Registry.hello` (honouring
  `[enrollment] auto_adopt`), reply `{status, machine_id, entity_id, heartbeat_interval}`; a bad
  message or a refusal gets `{"error": {code, message}}`, naming what is wrong. Never crashes.
- `fluxrig.event.heartbeat.<name>`: `Registry.heartbeat` stores the stats and bumps `last_seen`
  (an offline rack comes back). The rack name is the subject's last token. Heartbeats of unknown
  or retired racks are ignored, logged at most once a minute per name.
- `fluxrig.rack.<name>.status`: `{status, machine_id}` whenever a rack's status changes here (a
  hello that adopted or brought it back, a heartbeat that brought it back), when `notify` is
  called (manual adoption, the heartbeat sweep's offline verdicts), and whenever a heartbeat says
  the rack believes in another status than the registry's (so a change made elsewhere reaches the
  rack within one heartbeat).

The registry blocks (DuckDB): every call goes through `asyncio.to_thread`. Hellos are handled one
at a time (one subscription), heartbeats likewise, independently of each other.

The hello of an adopted rack is answered with its certificate (`certify`: the Snake's
credentials, see `mixer.snake`); a hello whose CSR key was revoked is refused `revoked`
(`revoked`: the revocation list of `mixer.passports`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from mixer import hub_client
from mixer.errors import (
    MachineIdsExhaustedError,
    MixerError,
    RackConflictError,
    RackNameError,
    RackNotFoundError,
)
from mixer.registry import RackRecord, RackStatus, Registry
from mixer.settings import EnrollmentSection
from rack.lifecycle import Service
from rack.link.protocol import (
    HEARTBEAT_SUBJECTS,
    HELLO_SUBJECT,
    QUEUE_GROUP,
    ErrorCode,
    Heartbeat,
    Hello,
    HelloReply,
    PassportState,
    ProtocolError,
    StatusUpdate,
    decode,
    encode,
    status_subject,
)

__all__ = ["Enrollment"]

log = logging.getLogger("fluxrig.mixer.enrollment")

QUIET_SECONDS = 60.0  # one log line per rack name and minute for ignored heartbeats
_QUIET_NAMES = 1024


@dataclass(frozen=True, slots=True)
class Sighting:
    """What a hello or heartbeat says: the scenario digest the rack runs and its passport."""

    scenario: str | None
    passport: PassportState | None
    hello: bool


def _check_csr(hello: Hello) -> None:
    """A CSR must parse, verify, and name the rack (else the passport office could not use it)."""
    if hello.csr is None:
        return
    try:
        csr = x509.load_pem_x509_csr(hello.csr.encode())
        valid = csr.is_signature_valid
        names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError as exc:
        raise Refused(
            "bad_request", f"field 'csr' is not a PEM certificate request: {exc}"
        ) from None
    if not valid:
        raise Refused("bad_request", "field 'csr': its signature does not verify")
    if names != [hello.name]:
        raise Refused("bad_request", f"field 'csr' names {names}, not the rack {hello.name!r}")


class RackObserver(Protocol):
    """Told about every hello and heartbeat (the orchestrator pushes what a rack misses, the
    passport office renews passports)."""

    async def rack_seen(self, record: RackRecord, sighting: Sighting) -> None: ...


class Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Enrollment(Service):
    """The enrollment service on the hub; its own NATS connection. `aclose()` is idempotent."""

    def __init__(
        self,
        url: str,
        registry: Registry,
        settings: EnrollmentSection,
        *,
        trusted: Iterable[str] = (),
        observers: Sequence[RackObserver] = (),
        on_status: Callable[[RackRecord], None] | None = None,
        certify: Callable[[RackRecord], Awaitable[dict[str, Any] | None]] | None = None,
        revoked: Callable[[str], bool] | None = None,
    ) -> None:
        self.url = url
        self.registry = registry
        self.settings = settings
        self.trusted = frozenset(trusted)  # names adopted at hello (the mixer's own local rack)
        self.observers = tuple(observers)
        self.on_status = on_status  # every status announced (and new racks): the gRPC watch
        self.certify = certify  # what an adopted rack's hello reply carries for its Snake
        self.revoked = revoked  # the revocation list: was this CSR's key revoked?
        self._nc: Client | None = None
        self._quiet: dict[str, float] = {}

    async def start(self) -> None:
        if self._nc is not None:
            raise MixerError("the enrollment service is already started")
        self._nc = nc = await hub_client.connect(self.url, "enrollment")
        try:
            await nc.subscribe(HELLO_SUBJECT, queue=QUEUE_GROUP, cb=self._on_hello)
            await nc.subscribe(HEARTBEAT_SUBJECTS, cb=self._on_heartbeat)
            await nc.flush()
        except BaseException:
            await self.aclose()
            raise
        log.info(
            "enrollment listening on %s (auto_adopt=%s)",
            hub_client.shown(self.url), self.settings.auto_adopt,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Finish the messages being handled (drain), then close the connection."""
        nc, self._nc = self._nc, None
        if await hub_client.drain(nc, "enrollment"):
            log.info("enrollment closed")

    # -- status announcements ---------------------------------------------------------------------

    async def notify(self, record: RackRecord) -> None:
        """Tell the rack its status (`fluxrig.rack.<name>.status`); never raises."""
        self._status_seen(record)
        nc = self._nc
        if nc is None or nc.is_closed:
            log.debug("enrollment is closed: status of rack %r not announced", record.name)
            return
        update = StatusUpdate(status=record.status.value, machine_id=record.machine_id)
        try:
            await nc.publish(status_subject(record.name), encode(update))
        except NatsError as exc:
            log.warning("cannot announce the status of rack %r: %s", record.name, exc)

    def _status_seen(self, record: RackRecord) -> None:
        if self.on_status is not None:
            try:
                self.on_status(record)
            except Exception:
                log.exception("the status hook failed for rack %r", record.name)

    async def publish(self, subject: str, data: bytes, *, flush: bool = False) -> None:
        """Publish on the enrollment connection (e.g. a rack's passport); never raises. With
        `flush`, return once the hub has it (before, e.g., a reload cuts the rack off)."""
        nc = self._nc
        if nc is None or nc.is_closed:
            log.debug("enrollment is closed: nothing published on %s", subject)
            return
        try:
            await nc.publish(subject, data)
            if flush:
                await nc.flush(timeout=5)
        except (NatsError, TimeoutError) as exc:
            log.warning("cannot publish on %s: %s", subject, exc)

    async def notify_all(self, records: Iterable[RackRecord]) -> None:
        for record in records:
            await self.notify(record)

    # -- hello ------------------------------------------------------------------------------------

    async def _on_hello(self, msg: Msg) -> None:
        if not msg.reply:
            log.warning("ignored a hello published without a reply subject (use a request)")
            return
        try:
            hello, before, record = await self._hello(msg.data)
        except Refused as exc:
            await self._respond(msg, {"error": {"code": exc.code, "message": exc.message}})
            return
        snake = await self._snake(record)
        reply = HelloReply(
            status=record.status.value,
            machine_id=record.machine_id,
            entity_id=record.entity_id,
            heartbeat_interval=self.settings.heartbeat_interval,
            **snake,
        )
        await self._respond(msg, reply.model_dump())
        if before is None:
            self._status_seen(record)
            log.info(
                "rack %r enrolled: machine id %d, %s",
                record.name,
                record.machine_id,
                record.status.value,
            )
        if record.status is not (before or RackStatus.PENDING):  # adopted or back: announce
            await self.notify(record)
        await self._observe(record, Sighting(hello.scenario, hello.passport, hello=True))

    async def _snake(self, record: RackRecord) -> dict[str, Any]:
        if self.certify is None:
            return {}
        try:
            return await self.certify(record) or {}
        except Exception as exc:  # no certificate this time: the rack asks again
            log.error("no certificate for rack %r: %s", record.name, exc)
            return {}

    async def _hello(self, data: bytes) -> tuple[Hello, RackStatus | None, RackRecord]:
        try:
            hello = decode(Hello, data, "hello")
        except ProtocolError as exc:
            raise Refused("bad_request", str(exc)) from None
        self._check_token(hello)
        _check_csr(hello)
        revoked = self.revoked
        if hello.csr and revoked is not None and await asyncio.to_thread(revoked, hello.csr):
            log.warning("hello of rack %r refused: its key was revoked", hello.name)
            raise Refused(
                "revoked",
                f"the key of rack {hello.name!r} was revoked by the mixer; it cannot enroll "
                "again with it (delete rack.key and enroll under a new name)",
            )
        attributes = hello.attributes.model_dump(exclude_none=True)
        if hello.csr is not None:
            attributes["csr"] = hello.csr  # certified when the rack is adopted
        try:
            before, record = await asyncio.to_thread(self._registry_hello, hello, attributes)
            return hello, before, record
        except RackNameError as exc:
            raise Refused("bad_name", str(exc)) from None
        except Refused as exc:
            log.warning("hello of rack %r refused (%s): %s", hello.name, exc.code, exc.message)
            raise
        except MachineIdsExhaustedError as exc:
            log.error("%s", exc)
            raise Refused("exhausted", str(exc)) from None
        except Exception as exc:  # the registry failed: say so, keep serving
            log.exception("hello of rack %r failed", hello.name)
            raise Refused("internal", f"the mixer could not record the hello: {exc}") from None

    def _check_token(self, hello: Hello) -> None:
        expected = self.settings.token
        if expected is None:
            return
        given = (hello.token or "").encode()
        if not hmac.compare_digest(given, expected.encode()):
            what = "a wrong" if hello.token else "no"
            log.warning("hello of rack %r refused: %s bootstrap token", hello.name, what)
            raise Refused(
                "unauthorized",
                f"the hello carries {what} bootstrap token: give the rack the mixer's "
                "(FLUXRIG_BOOTSTRAP_TOKEN, [rack] bootstrap_token)",
            )

    def _registry_hello(
        self, hello: Hello, attributes: dict[str, Any]
    ) -> tuple[RackStatus | None, RackRecord]:
        try:
            before: RackStatus | None = self.registry.get(hello.name).status
        except RackNotFoundError:
            before = None
        try:
            record = self.registry.hello(
                hello.name,
                version=hello.version,
                attributes=attributes,
                auto_adopt=self.settings.auto_adopt or hello.name in self.trusted,
            )
        except RackConflictError as exc:
            code: ErrorCode = "retired" if before is RackStatus.RETIRED else "name_conflict"
            raise Refused(code, str(exc)) from None
        return before, record

    async def _respond(self, msg: Msg, body: dict[str, Any]) -> None:
        try:
            await msg.respond(encode(body))
        except NatsError as exc:
            log.warning("cannot answer a hello: %s", exc)

    # -- heartbeats -------------------------------------------------------------------------------

    async def _on_heartbeat(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        try:
            beat = decode(Heartbeat, msg.data, f"heartbeat of rack {name!r}")
        except ProtocolError as exc:
            self._quietly(name, logging.WARNING, "ignored: %s", exc)
            return
        if beat.name != name:
            self._quietly(
                name, logging.WARNING, "ignored a heartbeat on %s naming rack %r", msg.subject,
                beat.name,
            )  # fmt: skip
            return
        stats = {**beat.stats.model_dump(exclude_none=True), "ts": beat.ts}
        try:
            record = await asyncio.to_thread(self.registry.heartbeat, name, stats)
        except RackNotFoundError:
            self._quietly(name, logging.INFO, "ignored heartbeats of unknown rack %r", name)
            return
        except RackConflictError as exc:  # retired
            self._quietly(name, logging.WARNING, "ignored heartbeats: %s", exc)
            return
        except Exception:
            log.exception("heartbeat of rack %r could not be recorded", name)
            return
        if beat.status != record.status.value:
            await self.notify(record)
        await self._observe(record, Sighting(beat.scenario, beat.passport, hello=False))

    async def _observe(self, record: RackRecord, sighting: Sighting) -> None:
        for observer in self.observers:
            try:
                await observer.rack_seen(record, sighting)
            except Exception:  # an observer must not break enrollment
                log.exception("%s failed on a %s of rack %r", type(observer).__name__,
                              "hello" if sighting.hello else "heartbeat", record.name)  # fmt: skip

    def _quietly(self, name: str, level: int, text: str, *args: object) -> None:
        """Log at most once per `QUIET_SECONDS` per rack name."""
        now = time.monotonic()
        if now - self._quiet.get(name, -QUIET_SECONDS) < QUIET_SECONDS:
            return
        if len(self._quiet) >= _QUIET_NAMES:
            self._quiet.clear()
        self._quiet[name] = now
        log.log(level, text + " (repeats are not logged for %gs)", *args, QUIET_SECONDS)
