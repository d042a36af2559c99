"""The operator commands: racks, scenarios and specs on a mixer, through its REST API.

fluxrig racks list [--status S] | show NAME | adopt|suspend|resume|retire NAME | rename NAME NEW
fluxrig scenario import FILE [--name N] --tag T [--dry-run] | list [--name N] | show REF [--meta]
fluxrig scenario diff FILE [--against REF]          (default: against the active scenario)
fluxrig scenario activate REF [--timeout S] | active | history [--limit N]
fluxrig spec import FILE --name N --tag T [--dry-run] | list [--name N] | show REF | diff FILE ...
fluxrig gears list --remote

Every command takes `--api-url` (else FLUXRIG_API_URL, else http://127.0.0.1:8090),
`--api-token` (else FLUXRIG_API_TOKEN) and `--json` (the API's answer instead of a table).
Exit codes: 0 done, 1 the mixer refused or cannot be reached (`ApiError`, message on stderr),
2 usage. Only the standard library talks HTTP here (`rack.api_client`): the rack's base install
has no aiohttp.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from rack.api_client import DEFAULT_API_URL, ApiClient, segment
from rack.errors import FluxError

Actions: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
NO_ACTIVE = "no scenario is active; use --against REF"
ACTIVATE_TIMEOUT = 300.0  # seconds: racks get [orchestrator] apply_timeout, twice on a rollback


# -- output --------------------------------------------------------------------------------------


def client(args: argparse.Namespace) -> ApiClient:
    return ApiClient.resolve(args.api_url, args.api_token, api_ca=args.api_ca)


def emit_json(value: Any) -> int:
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return 0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers) - 1)]
    for row in [headers, *rows]:
        cells = [f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def when(value: str | None) -> str:
    """An API timestamp as `YYYY-MM-DD HH:MM:SS` (UTC); `-` when there is none."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


# -- racks ---------------------------------------------------------------------------------------


def cmd_racks_list(args: argparse.Namespace) -> int:
    answer = client(args).get("/racks", {"status": args.status})
    if args.json:
        return emit_json(answer)
    racks = answer["racks"]
    if not racks:
        print("no racks" + (f" with status {args.status}" if args.status else ""))
        return 0
    rows = [
        (r["name"], str(r["machine_id"]), r["status"], r["version"] or "-", when(r["last_seen"]))
        for r in racks
    ]
    table(("NAME", "MID", "STATUS", "VERSION", "LAST SEEN"), rows)
    return 0


RACK_FIELDS = ("name", "status", "adopted", "machine_id", "entity_id", "type_id", "version")


def cmd_racks_show(args: argparse.Namespace) -> int:
    rack = client(args).get(f"/racks/{segment(args.name)}")
    if args.json:
        return emit_json(rack)
    lines = [(key, "-" if rack[key] is None else str(rack[key])) for key in RACK_FIELDS]
    lines += [(key, when(rack[key])) for key in ("last_seen", "created_at", "updated_at")]
    lines += [(key, compact(rack[key])) for key in ("attributes", "stats")]
    for key, value in lines:
        print(f"{key + ':':<12} {value}")
    return 0


def cmd_racks_transition(args: argparse.Namespace) -> int:
    rack = client(args).post(f"/racks/{segment(args.name)}/{args.action}")
    if args.json:
        return emit_json(rack)
    print(f"rack '{rack['name']}' is now {rack['status']} (MachineID {rack['machine_id']})")
    return 0


def cmd_racks_rename(args: argparse.Namespace) -> int:
    rack = client(args).post(f"/racks/{segment(args.name)}/rename", {"name": args.new})
    if args.json:
        return emit_json(rack)
    print(
        f"rack '{args.name}' is now '{rack['name']}' "
        f"({rack['status']}, MachineID {rack['machine_id']})"
    )
    return 0


# -- scenarios and specs -------------------------------------------------------------------------


def document_text(path: Path, kind: str) -> str:
    """What an import sends: the file's UTF-8 text; a scenario in the fluxrig.toml form is
    converted to YAML first (the mixer stores YAML)."""
    if kind == "scenario" and path.suffix.lower() == ".toml":
        import yaml

        from rack.scenario_files import load_document

        raw = load_document(path).raw  # ScenarioError names every problem of the TOML form
        print(f"note: {path} is in the fluxrig.toml form; sending it as YAML", file=sys.stderr)
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    try:
        return path.read_bytes().decode("utf-8")  # bytes as they are: the digest is of these
    except OSError as exc:
        raise FluxError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise FluxError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def cmd_import(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "tag": args.tag,
        "content": document_text(args.file, args.kind),
        "dry_run": args.dry_run,
    }
    if args.name is not None:
        body["name"] = args.name
    result = client(args).post(f"/{args.kind}s", body)
    if args.json:
        return emit_json(result)
    what = f"{args.kind} {result['ref']}"
    where = f"{result['digest'][:19]}, {result['size']} bytes"
    if result["dry_run"] and result["created"]:
        print(f"dry run: {what} would be stored ({where}); nothing was stored")
    elif result["dry_run"]:
        print(f"dry run: {what} is already stored with these exact bytes ({where})")
    elif result["created"]:
        print(f"stored {what} ({where})")
    else:
        print(f"{what} is already stored with these exact bytes ({where}); nothing to do")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    answer = client(args).get(f"/{args.kind}s", {"name": args.name})
    if args.json:
        return emit_json(answer)
    entries = answer["entries"]
    if not entries:
        print(f"no {args.kind}s stored" + (f" under the name {args.name}" if args.name else ""))
        return 0
    rows = [
        (e["name"], e["tag"], e["digest"][:19], str(e["size"]), when(e["created_at"]))
        for e in entries
    ]
    table(("NAME", "TAG", "DIGEST", "SIZE", "CREATED"), rows)
    return 0


def content_bytes(content: dict[str, Any]) -> bytes:
    if content["encoding"] == "base64":
        return base64.b64decode(content["content"])
    return str(content["content"]).encode("utf-8")


def cmd_show(args: argparse.Namespace) -> int:
    content = client(args).get(f"/{args.kind}s/{segment(args.ref)}")
    if args.json:
        return emit_json(content)
    if args.meta:
        for key in ("kind", "name", "tag", "digest", "size", "encoding"):
            print(f"{key + ':':<9} {'-' if content[key] is None else content[key]}")
        return 0
    sys.stdout.flush()
    sys.stdout.buffer.write(content_bytes(content))
    sys.stdout.buffer.flush()
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    local = document_text(args.file, args.kind)
    api = client(args)
    if args.against is not None:
        against, ref = args.against, args.against
    else:  # a scenario without --against: the active one, fetched by its digest
        active = api.get("/activation")["active"]
        if active is None:
            raise FluxError(NO_ACTIVE)
        against, ref = f"active {active['ref'] or active['digest']}", active["digest"]
    content = api.get(f"/{args.kind}s/{segment(ref)}")
    stored = content_bytes(content).decode("utf-8", "replace")
    diff = "".join(_unified(stored, local, f"{against} (mixer)", str(args.file)))
    if args.json:
        return emit_json({"against": against, "digest": content["digest"], "diff": diff})
    if not diff:
        print(f"no differences: {args.file} matches {args.kind} {against}")
    sys.stdout.write(diff)
    return 0


def _unified(old: str, new: str, old_name: str, new_name: str) -> list[str]:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
    )
    return [
        line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n" for line in lines
    ]


# -- activation ----------------------------------------------------------------------------------


def scenario_label(activation: dict[str, Any]) -> str:
    return str(activation["ref"] or activation["digest"])


def cmd_activate(args: argparse.Namespace) -> int:
    path = f"/scenarios/{segment(args.ref)}/activate"
    result = client(args).post(path, timeout=args.timeout)  # 409/422: ApiError with every detail
    if args.json:
        return emit_json(result)
    act = result["activation"]
    print(f"activated {scenario_label(act)} (activation {act['id']}, {act['digest'][:19]})")
    rows = [(r["rack"], r["state"], r["report"] or r["error"] or "-") for r in result["racks"]]
    if rows:
        table(("RACK", "STATE", "REPORT"), rows)
    else:
        print("no rack is active yet: each rack gets it once it is adopted and says hello")
    if result["adopted"]:
        print(f"adopted (the scenario names them): {', '.join(result['adopted'])}")
    if result["unknown"]:
        print(f"named but never enrolled (adopted at hello): {', '.join(result['unknown'])}")
    return 0


def cmd_active(args: argparse.Namespace) -> int:
    answer = client(args).get("/activation")
    if args.json:
        return emit_json(answer)
    act = answer["active"]
    if act is None:
        print("no scenario is active (fluxrig scenario activate REF)")
    else:
        print(
            f"active: {scenario_label(act)} ({act['digest'][:19]}, activation {act['id']}, "
            f"since {when(act['finished_at'])})"
        )
    rows = [
        (
            r["rack"],
            r["digest"][:19] if r["digest"] else "-",
            when(r["since"]),
            "yes" if r["applied"] else "no",
            r["last_state"] + (f": {r['last_error']}" if r["last_error"] else ""),
        )
        for r in answer["racks"]
    ]
    if rows:
        table(("RACK", "DIGEST", "SINCE", "APPLIED", "LAST PUSH"), rows)
    else:
        print("no rack was pushed a scenario yet")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    limit = str(args.limit) if args.limit is not None else None
    answer = client(args).get("/activations", {"limit": limit})
    if args.json:
        return emit_json(answer)
    rows = [
        (
            str(a["id"]),
            a["state"],
            a["ref"] or "-",
            a["digest"][:19],
            when(a["requested_at"]),
            a["error"] or "-",
        )
        for a in answer["activations"]
    ]
    if not rows:
        print("no activations yet")
        return 0
    table(("ID", "STATE", "REF", "DIGEST", "REQUESTED", "ERROR"), rows)
    return 0


# -- gears (remote) ------------------------------------------------------------------------------


def cmd_gears_remote(args: argparse.Namespace) -> int:
    answer = client(args).get("/gears")
    if args.json:
        return emit_json(answer)
    rows = [
        (g["type"], ",".join(g["inputs"]) or "-", ",".join(g["outputs"]) or "-", g["summary"])
        for g in answer["gears"]
    ]
    table(("TYPE", "IN", "OUT", "SUMMARY"), rows)
    for name, error in sorted(answer.get("load_errors", {}).items()):
        print(f"! {name}: failed to load on the mixer: {error}", file=sys.stderr)
    return 0


# -- parsers -------------------------------------------------------------------------------------


def remote_options() -> argparse.ArgumentParser:
    """The options every remote command takes (an argparse parent)."""
    common = argparse.ArgumentParser(add_help=False)
    _api_arguments(common.add_argument_group("mixer API"))
    return common


def _api_arguments(group: argparse._ArgumentGroup) -> None:
    url = f"the mixer's REST API (else FLUXRIG_API_URL, else {DEFAULT_API_URL})"
    group.add_argument("--api-url", help=url)
    group.add_argument("--api-token", help="bearer token (else FLUXRIG_API_TOKEN)")
    group.add_argument(
        "--api-ca", help="CA file for an https API, e.g. the mixer's pki/ca.crt (FLUXRIG_API_CA)"
    )
    group.add_argument("--json", action="store_true", help="print the API's JSON answer")


def add_parsers(sub: Actions, scenario: Actions) -> None:
    """Add `racks` and `spec` to the top level, and the remote actions to `scenario`."""
    common = remote_options()
    _add_racks(sub, common)
    _add_content(scenario, "scenario", common)
    _add_activation(scenario, common)
    spec = sub.add_parser("spec", help="specs stored on the mixer")
    _add_content(
        spec.add_subparsers(dest="action", required=True, metavar="ACTION"), "spec", common
    )


def add_gears_remote(gears_list: argparse.ArgumentParser) -> None:
    """`fluxrig gears list --remote`: the mixer's catalogue instead of this install's."""
    gears_list.add_argument("--remote", action="store_true", help="list the mixer's gear types")
    _api_arguments(gears_list.add_argument_group("mixer API (with --remote)"))


def _add_racks(sub: Actions, common: argparse.ArgumentParser) -> None:
    actions = sub.add_parser("racks", help="racks registered with the mixer").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = actions.add_parser("list", parents=[common], help="list racks")
    listing.add_argument("--status", help="only racks in this status (pending, active, ...)")
    listing.set_defaults(func=cmd_racks_list)
    show = actions.add_parser("show", parents=[common], help="one rack, every field")
    show.add_argument("name")
    show.set_defaults(func=cmd_racks_show)
    for verb, text in (
        ("adopt", "adopt a pending or offline rack (it becomes active)"),
        ("suspend", "suspend an active or offline rack"),
        ("resume", "resume a suspended rack"),
        ("retire", "retire a rack for good: kill switch, certificates revoked (MID never reused)"),
    ):
        p = actions.add_parser(verb, parents=[common], help=text)
        p.add_argument("name")
        p.set_defaults(func=cmd_racks_transition)
    rename = actions.add_parser("rename", parents=[common], help="rename a rack (keeps its ID)")
    rename.add_argument("name")
    rename.add_argument("new", help="the new name (must be free)")
    rename.set_defaults(func=cmd_racks_rename)


def _add_content(actions: Actions, kind: str, common: argparse.ArgumentParser) -> None:
    imp = actions.add_parser("import", parents=[common], help=f"store a {kind} as name:tag")
    imp.add_argument("file", type=Path)
    if kind == "scenario":
        imp.add_argument("--name", help="store name (default: the scenario's own name)")
    else:
        imp.add_argument("--name", required=True, help="store name")
    imp.add_argument("--tag", required=True, help="immutable tag, e.g. v1.0.0")
    imp.add_argument("--dry-run", action="store_true", help="validate and report; store nothing")
    imp.set_defaults(func=cmd_import, kind=kind)
    listing = actions.add_parser("list", parents=[common], help=f"list stored {kind}s")
    listing.add_argument("--name", help="only this name")
    listing.set_defaults(func=cmd_list, kind=kind)
    show = actions.add_parser("show", parents=[common], help=f"print a stored {kind}")
    show.add_argument("ref", help="name:tag, name (latest SemVer tag) or sha256:<hex>")
    show.add_argument("--meta", action="store_true", help="print its metadata, not the content")
    show.set_defaults(func=cmd_show, kind=kind)
    diff = actions.add_parser("diff", parents=[common], help=f"unified diff of a file vs a {kind}")
    diff.add_argument("file", type=Path)
    against = "the stored ref to compare with (name:tag, name or sha256:<hex>)"
    if kind == "scenario":
        against += "; default: the active scenario"
    diff.add_argument("--against", metavar="REF", required=kind != "scenario", help=against)
    diff.set_defaults(func=cmd_diff, kind=kind)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _add_activation(actions: Actions, common: argparse.ArgumentParser) -> None:
    activate = actions.add_parser(
        "activate", parents=[common], help="activate a stored scenario on every active rack"
    )
    activate.add_argument("ref", help="name:tag, name (latest SemVer tag) or sha256:<hex>")
    activate.add_argument(
        "--timeout",
        type=_seconds,
        default=ACTIVATE_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the mixer's answer (default {ACTIVATE_TIMEOUT:g}); it waits "
        "up to [orchestrator] apply_timeout for the racks, twice when it rolls back",
    )
    activate.set_defaults(func=cmd_activate)
    active = actions.add_parser(
        "active", parents=[common], help="the active scenario and what every rack runs"
    )
    active.set_defaults(func=cmd_active)
    history = actions.add_parser("history", parents=[common], help="activations, newest first")
    history.add_argument("--limit", type=int, help="at most N (1..1000, default 50)")
    history.set_defaults(func=cmd_history)
