"""The sink and log gears."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pydantic
import pytest

from rack.errors import GearError
from rack.gear.testing import GearHarness
from rack.gears.sink import LogConfig, LogGear, SinkConfig, SinkGear
from rack.model.fluxmsg import FluxMsg

LOGGER = "fluxrig.gear.test"


async def test_sink_counts_messages_and_bytes() -> None:
    async with GearHarness(SinkGear) as h:
        for raw in (b"abc", b"", b"12345"):
            assert await h.process(h.msg(raw)) == []
        gear = h.gear
        assert isinstance(gear, SinkGear)
        assert (gear.count, gear.bytes) == (3, 8)
        assert h.stats.get("sunk") == 3
        assert h.stats.get("bytes") == 8
        assert list(gear.last) == []


async def test_sink_keeps_the_last_n() -> None:
    async with GearHarness(SinkGear, {"keep_last": 2}) as h:
        msgs = [h.msg(b"%d" % i) for i in range(5)]
        for msg in msgs:
            await h.process(msg)
        gear = h.gear
        assert isinstance(gear, SinkGear)
        assert list(gear.last) == msgs[-2:]


async def test_sink_wait_for_returns_once_enough_arrived() -> None:
    async with GearHarness(SinkGear) as h:
        gear = h.gear
        assert isinstance(gear, SinkGear)
        async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
            waiter = tg.create_task(gear.wait_for(2))
            await h.process(h.msg(b"1"))
            await asyncio.sleep(0)
            assert not waiter.done()
            await h.process(h.msg(b"2"))
        assert waiter.done()


def test_sink_ports_are_only_error() -> None:
    ports = SinkGear.ports(SinkConfig())
    assert ports.inputs == ("in",)
    assert ports.outputs == ("error",)


def test_sink_rejects_negative_keep_last() -> None:
    with pytest.raises(pydantic.ValidationError, match="keep_last"):
        SinkGear.parse_config({"keep_last": -1})


async def test_log_passes_messages_through_and_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with GearHarness(LogGear) as h:
        msg = h.msg(b"hello", data={"a": 1}, meta={"k": "v"})
        assert await h.process(msg) == [("out", msg)]
    [record] = caplog.records
    assert record.levelno == logging.INFO
    text = record.getMessage()
    assert f"msg {msg.id}" in text
    assert "raw=hello" in text
    assert "data={'a': 1}" in text
    assert "'k': 'v'" in text


async def test_log_samples_every_nth(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with GearHarness(LogGear, {"sample_every": 3, "level": "warning"}) as h:
        msgs = [h.msg(b"m%d" % i) for i in range(7)]
        for msg in msgs:
            assert await h.process(msg) == [("out", msg)]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
    assert all(
        f"raw=m{i}" in r.getMessage() for i, r in zip((0, 3, 6), caplog.records, strict=True)
    )


@pytest.mark.parametrize(
    ("show", "present", "absent"),
    [("raw", "raw=", "data="), ("data", "data=", "raw="), ("both", "raw=", "")],
)
async def test_log_show_selects_parts(
    caplog: pytest.LogCaptureFixture, show: str, present: str, absent: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with GearHarness(LogGear, {"show": show}) as h:
        await h.process(h.msg(b"x", data=[1]))
    text = caplog.records[0].getMessage()
    assert present in text
    if absent:
        assert absent not in text


async def test_log_truncates_and_escapes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with GearHarness(LogGear, {"max_chars": 16}) as h:
        await h.process(h.msg(b"\xff" + b"a" * 200, data={"k": "v" * 100}))
    text = caplog.records[0].getMessage()
    assert "raw=\\xffaaaaaaaaaaaa…(201 bytes)" in text
    assert "data={'k': 'vvvvvvvvv…(109 chars)" in text


async def test_log_renders_nothing_when_level_disabled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with GearHarness(LogGear, {"level": "debug"}) as h:
        gear = h.gear
        assert isinstance(gear, LogGear)
        rendered: list[FluxMsg] = []

        def render(msg: FluxMsg) -> str:
            rendered.append(msg)
            return ""

        gear.render = render  # type: ignore[method-assign]
        await h.process(h.msg(b"x"))
    assert rendered == []
    assert caplog.records == []


@pytest.mark.parametrize("bad", [{"level": "loud"}, {"sample_every": 0}, {"show": "all"}])
def test_log_rejects_bad_config(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        LogConfig.model_validate(bad)


async def test_sink_records_each_message_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with GearHarness(SinkGear, {"path": str(path)}) as h:
        first, second = h.msg(b"a\nb"), h.msg(b"c")
        await h.process(first)
        await h.process(second)
        assert path.read_text() == f"{first.id}\n{second.id}\n"  # on disk before stop
    async with GearHarness(SinkGear, {"path": str(path), "record": "raw"}) as h:
        await h.process(h.msg(b"x\ny"))
    assert path.read_bytes().endswith(b"x\\ny\n")


async def test_sink_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(GearError, match="sink cannot open path"):
        async with GearHarness(SinkGear, {"path": str(tmp_path / "file" / "x.log")}):
            pass
