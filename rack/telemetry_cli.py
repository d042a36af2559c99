"""The telemetry commands: what the mixer's telemetry hub stored, through its REST API.

fluxrig telemetry query "SQL" [--limit N]      one read-only statement (spans, metric_points, logs)
fluxrig telemetry status                       the hub's own health: received, refused, written,
                                               dropped rows; archive, forwarding, queries
fluxrig metrics [--rack R] [--gear G] [--name N] [--since 15m] [--until T] [--limit N]
fluxrig logs [--rack R] [--gear G] [--trace-id T] [--min-severity ERROR] [--since 1h] [--limit N]
fluxrig trace FLUX_ID_OR_TRACE_ID              the span tree of a trace (32 hex digits), or of
                                               every trace a fluxMsg (its fluxID) went through

Like every remote command (`rack.ops_cli`): `--api-url`, `--api-token` (the read-only token
suffices), `--api-ca`, `--json` (the API's answer instead of a table). Times are ISO-8601 (UTC
without an offset) or relative to the mixer's clock: `30s`, `15m`, `2h`, `1d`, `1w`. Exit codes:
0 done, 1 the mixer refused (bad parameter, SQL refused, 503 telemetry disabled) or cannot be
reached, 2 usage.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rack.api_client import segment
from rack.errors import FluxError
from rack.ops_cli import Actions, client, compact, emit_json, remote_options, table

TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
FLUX_SPANS = "1000"  # spans of one fluxMsg fetched to find its traces
SEVERITIES = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17,
              "fatal": 21}  # fmt: skip
Row = Mapping[str, Any]


# -- formatting ----------------------------------------------------------------------------------


def stamp(value: str | None) -> str:
    """An API time as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); `-` when there is none."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def duration(micros: int | None) -> str:
    if micros is None:
        return "-"
    if micros < 1000:
        return f"{micros} µs"
    if micros < 1_000_000:
        return f"{micros / 1000:.3f} ms"
    return f"{micros / 1_000_000:.3f} s"


def cell(value: Any) -> str:
    """A SQL result value in a table: NULL, text as it is, anything else as compact JSON."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value.replace("\n", "\\n")
    if isinstance(value, float):
        return number(value)
    return compact(value)


def dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


# -- telemetry query -----------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    answer = client(args).post("/telemetry/query", {"sql": args.sql, "limit": args.limit})
    if args.json:
        return emit_json(answer)
    rows, columns = answer["rows"], answer["columns"]
    if columns:
        table(columns, [[cell(row.get(c)) for c in columns] for row in rows])
    more = f"; there may be more (--limit {args.limit})" if answer["truncated"] else ""
    print(f"({len(rows)} row{'' if len(rows) == 1 else 's'}{more})")
    return 0


# -- telemetry status ----------------------------------------------------------------------------


def size(value: int) -> str:
    """Bytes for people: `512 B`, `1.5 KiB`, `64.0 MiB`."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def hour(value: str | None) -> str:
    return stamp(value)[:16] if value else "-"


def health(status: Row) -> list[tuple[str, str]]:
    """The status as (what, how it is) lines."""
    receivers, intake, writer = status["receivers"], status["intake"], status["writer"]
    archive, queries, forward = status["archive"], status["queries"], status["forwarding"]
    state = "running" if status["running"] else "not running"
    last = writer["last_error"]
    lines = [
        ("hub", f"{state}; OTLP/gRPC {receivers['host']}:{receivers['grpc_port']}, "
                f"OTLP/HTTP {receivers['host']}:{receivers['http_port']}"),
        ("received", f"{intake['received_rows']} rows"),
        ("refused", f"{intake['refused_requests']} requests (write queue full; senders retry)"),
        ("queued", f"{intake['queued_rows']} of {intake['max_rows']} rows, "
                   f"{size(intake['queued_bytes'])} of {size(intake['max_bytes'])}"),
        ("failed", f"{writer['failed_rows']} rows dropped"),
        ("writer", f"{writer['retries']} retries, {writer['reopens']} reopens, "
                   f"{writer['checkpoints']} checkpoints"),
        ("last error", f"{stamp(last['at'])}  {last['message']}" if last else "-"),
        ("archive", f"{sum(archive['partitions'].values())} partitions, {size(archive['bytes'])}, "
                    f"{hour(archive['oldest_hour'])} .. {hour(archive['newest_hour'])} "
                    f"(retention {archive['retention_hours']} h)"),
    ]  # fmt: skip
    if forward is None:
        lines.append(("forwarding", "off"))
    else:
        queued = f"{size(forward['queued_bytes'])} of {size(forward['max_bytes'])}"
        lines.append(("forwarding", f"to {forward['endpoint']} ({forward['protocol']}): "
                      f"{forward['sent']} sent, {forward['dropped']} dropped, {forward['failed']} "
                      f"failed, {forward['queued_requests']} queued ({queued})"))  # fmt: skip
    lines.append(("queries", f"{queries['busy']} running of {queries['max_concurrent']} at most, "
                  f"timeout {number(queries['timeout'])} s"))  # fmt: skip
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    answer = client(args).get("/telemetry/status")
    if args.json:
        return emit_json(answer)
    lines = health(answer)
    width = max(len(what) for what, _ in lines)
    for what, how in lines:
        print(f"{what:<{width}}  {how}")
    print()
    live = answer["live_rows"] or {}
    written, partitions = answer["writer"]["written_rows"], answer["archive"]["partitions"]
    rows = [
        (name, str(written.get(name, 0)), dash(live.get(name)), str(partitions.get(name, 0)))
        for name in dict.fromkeys([*written, *partitions])
    ]
    table(("TABLE", "WRITTEN", "LIVE", "PARTITIONS"), rows)
    if answer["live_rows"] is None:
        print(f"(live rows unknown: {answer['live_rows_error']})")
    return 0


# -- metrics and logs ----------------------------------------------------------------------------


def window(args: argparse.Namespace) -> dict[str, str | None]:
    limit = str(args.limit) if args.limit is not None else None
    return {"since": args.since, "until": args.until, "limit": limit}


def measured(point: Row) -> str:
    """A data point's measurement: the value of a sum or gauge, else count, sum and range."""
    if point["value"] is not None:
        return number(point["value"])
    parts = [f"count={number(point['count'])}", f"sum={number(point['sum'])}"]
    if point["min"] is not None or point["max"] is not None:
        parts.append(f"min={number(point['min'])} max={number(point['max'])}")
    return " ".join(parts)


def cmd_metrics(args: argparse.Namespace) -> int:
    params = {"rack": args.rack, "gear": args.gear, "name": args.name, **window(args)}
    answer = client(args).get("/telemetry/metrics", params)
    if args.json:
        return emit_json(answer)
    points = answer["points"]
    if not points:
        print("no metric points match")
        return 0
    rows = [
        (stamp(p["ts"]), dash(p["rack"]), dash(p["gear"]), dash(p["name"]), dash(p["kind"]),
         dash(p["unit"]), measured(p))
        for p in points
    ]  # fmt: skip
    table(("TIME", "RACK", "GEAR", "NAME", "KIND", "UNIT", "VALUE"), rows)
    return 0


def severity(text: str) -> int:
    """`--min-severity`: an OTLP severity number (1..24) or a level name (ERROR = 17)."""
    value = SEVERITIES.get(text.strip().lower())
    if value is None:
        try:
            value = int(text)
        except ValueError:
            value = 0
    if not 1 <= value <= 24:
        names = ", ".join(n.upper() for n in SEVERITIES)
        raise argparse.ArgumentTypeError(f"expected 1..24 or one of {names}; got {text!r}")
    return value


def cmd_logs(args: argparse.Namespace) -> int:
    min_severity = str(args.min_severity) if args.min_severity is not None else None
    params = {"rack": args.rack, "gear": args.gear, "trace_id": args.trace_id,
              "min_severity": min_severity, **window(args)}  # fmt: skip
    answer = client(args).get("/telemetry/logs", params)
    if args.json:
        return emit_json(answer)
    records = answer["logs"]
    if not records:
        print("no log records match")
        return 0
    rows = [
        (stamp(r["ts"]), r["severity_text"] or number(r["severity_number"]), dash(r["rack"]),
         dash(r["gear"]), cell(r["body"]) if r["body"] is not None else "-")
        for r in records
    ]  # fmt: skip
    table(("TIME", "SEVERITY", "RACK", "GEAR", "BODY"), rows)
    return 0


# -- trace ---------------------------------------------------------------------------------------


def tree(spans: Sequence[Row]) -> Iterator[tuple[str, Row]]:
    """(tree prefix + name, span) in tree order by parent_span_id, siblings oldest first. A span
    whose parent is not stored is a root; spans only a cycle leads to come last, as roots."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[Row]] = {}
    for s in spans:  # the API answers oldest first
        parent = s["parent_span_id"]
        children.setdefault(parent if parent in ids else None, []).append(s)
    shown: set[int] = set()
    for root in [*children.get(None, []), *spans]:
        stack = [(root, "", "")]  # span, its branch, its children's indent
        while stack:
            span, branch, indent = stack.pop()
            if id(span) in shown:
                continue
            shown.add(id(span))
            yield f"{branch}{dash(span['name'])}", span
            kids = children.get(span["span_id"], [])
            for i in reversed(range(len(kids))):
                last = i == len(kids) - 1
                stack.append(
                    (
                        kids[i],
                        indent + ("└─ " if last else "├─ "),
                        indent + ("   " if last else "│  "),
                    )
                )


def summary(trace: Row) -> str:
    spans = trace["spans"]
    starts = [datetime.fromisoformat(s["ts_start"]) for s in spans]
    ends = [datetime.fromisoformat(s["ts_end"] or s["ts_start"]) for s in spans]
    total = round((max(ends) - min(starts)).total_seconds() * 1_000_000)
    racks = sorted({s["rack"] for s in spans if s["rack"]})
    where = f", rack {', '.join(racks)}" if racks else ""
    count = f"{len(spans)} span{'' if len(spans) == 1 else 's'}"
    start = stamp(min(starts).isoformat())
    return f"trace {trace['trace_id']}: {count}, {duration(total)}{where}, from {start}"


def show_trace(trace: Row, flux_id: str | None) -> None:
    print(summary(trace))
    rows = []
    for label, s in tree(trace["spans"]):
        mark = " *" if flux_id is not None and s["flux_id"] == flux_id else ""
        status = dash(s["status_code"]) + (
            f": {s['status_message']}" if s["status_message"] else ""
        )
        rows.append((label + mark, dash(s["gear"]), dash(s["rack"]), duration(s["duration_us"]),
                     stamp(s["ts_start"]), dash(s["flux_id"]), status))  # fmt: skip
    table(("SPAN", "GEAR", "RACK", "DURATION", "START", "FLUX ID", "STATUS"), rows)


def cmd_trace(args: argparse.Namespace) -> int:
    api = client(args)
    wanted = args.id.strip()
    flux_id: str | None = None
    if TRACE_ID.fullmatch(wanted):
        traces = [api.get(f"/telemetry/traces/{segment(wanted.lower())}")]
    else:
        flux_id = wanted
        found = api.get("/telemetry/spans", {"flux_id": flux_id, "limit": FLUX_SPANS})["spans"]
        trace_ids = list(dict.fromkeys(s["trace_id"] for s in found if s["trace_id"]))
        if not trace_ids:
            raise FluxError(
                f"no stored span carries fluxID {flux_id!r}: not traced, not exported yet, or "
                "older than the mixer's [telemetry] retention_hours (a trace id is 32 hex digits)"
            )
        traces = [api.get(f"/telemetry/traces/{segment(t)}") for t in trace_ids]
    if args.json:
        answer: dict[str, Any] = {"traces": traces}
        if flux_id is not None:
            answer = {"flux_id": flux_id, **answer}
        return emit_json(answer)
    for i, trace in enumerate(traces):
        if i:
            print()
        show_trace(trace, flux_id)
    if flux_id is not None:
        print(f"\n* carries fluxID {flux_id}")
    return 0


# -- parsers -------------------------------------------------------------------------------------


def _filters(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--rack", help=f"only {what} of this rack")
    parser.add_argument("--gear", help=f"only {what} of this gear")


def _window(parser: argparse.ArgumentParser) -> None:
    times = "ISO-8601 (UTC without an offset) or before now: 30s, 15m, 2h, 1d, 1w"
    parser.add_argument("--since", metavar="TIME", help=f"from this time on; {times}")
    parser.add_argument("--until", metavar="TIME", help=f"before this time; {times}")
    parser.add_argument("--limit", type=int, help="at most N rows, newest first (default 100)")


def add_parser(sub: Actions) -> None:
    """`telemetry query|status`, `metrics`, `logs` and `trace` at the top level of `fluxrig`."""
    common = remote_options()
    telemetry = sub.add_parser("telemetry", help="the mixer's telemetry: read-only SQL, status")
    actions = telemetry.add_subparsers(dest="action", required=True, metavar="ACTION")
    query = actions.add_parser(
        "query",
        parents=[common],
        help="one read-only SQL statement over spans, metric_points, logs",
    )
    query.add_argument("sql", help='e.g. "SELECT gear, count(*) AS n FROM spans GROUP BY gear"')
    query.add_argument("--limit", type=int, default=1000, help="at most N rows (default 1000)")
    query.set_defaults(func=cmd_query)
    status = actions.add_parser(
        "status",
        parents=[common],
        help="the hub's own health: rows received, refused, written, dropped; archive, forwarding",
    )
    status.set_defaults(func=cmd_status)

    metrics = sub.add_parser("metrics", parents=[common], help="metric points the mixer stored")
    _filters(metrics, "points")
    metrics.add_argument("--name", help="only this metric, e.g. fluxrig.gear.messages")
    _window(metrics)
    metrics.set_defaults(func=cmd_metrics)

    logs = sub.add_parser("logs", parents=[common], help="log records the mixer stored")
    _filters(logs, "records")
    logs.add_argument("--trace-id", help="only records of this trace (32 hex digits)")
    logs.add_argument(
        "--min-severity", type=severity, metavar="LEVEL", help="e.g. WARN, ERROR or 17 (1..24)"
    )
    _window(logs)
    logs.set_defaults(func=cmd_logs)

    trace = sub.add_parser("trace", parents=[common], help="the span tree of a trace or fluxMsg")
    what = "a trace id (32 hex digits), else a fluxID: every trace it went through"
    trace.add_argument("id", metavar="FLUX_ID_OR_TRACE_ID", help=what)
    trace.set_defaults(func=cmd_trace)
