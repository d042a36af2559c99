"""`fluxrig`: run a rack, and operate on scenarios and gears.

fluxrig run SCENARIO.yaml|fluxrig.toml [--config fluxrig.toml] [--name RACK] ...
fluxrig scenario validate FILE
fluxrig scenario import|list|show|diff ...     (on a mixer; see rack.ops_cli)
fluxrig racks list|show|adopt|suspend|resume|retire|rename ...
fluxrig spec import|list|show|diff ...
fluxrig gears list [--remote]
fluxrig gears doc TYPE | --all [--write DIR]
fluxrig gears schema TYPE
fluxrig keys show|backup ...                   (on the mixer host; see rack.keys_cli)
fluxrig telemetry query SQL | metrics | logs | trace ID      (see rack.telemetry_cli)
fluxrig tail WIRE [--rack R] [--filter EXPR] [--limit N] [--json] [--api-url URL]   (rack.tail_cli)
fluxrig version
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from rack import __version__
from rack.errors import ApiError, FluxError, ScenarioError, SettingsError, UnknownGearError
from rack.gear.docs import config_schema, render_all, render_gear_page, render_settings_page
from rack.gear.registry import GearRegistry
from rack.logs import setup_logging
from rack.preflight import preflight_file
from rack.settings import load_settings


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (it is on Linux/macOS by default), else asyncio."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# -- commands ----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from rack.runtime.serve import serve

    overrides = {
        key: value
        for key, value in {
            "name": args.name,
            "state_dir": args.state_dir,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "grace_period": args.grace_period,
            "queue_depth": args.queue_depth,
            "machine_id": args.machine_id,
            "nats_url": args.nats_url,
            "mixer_url": args.mixer_url,
            "watch": False if args.no_watch else None,
        }.items()
        if value is not None
    }
    config = args.config
    if config is None and args.scenario is not None and args.scenario.suffix == ".toml":
        config = args.scenario  # the seed's single-file form: [rack] settings beside [gears.*]
    settings = load_settings(config, overrides)
    if args.scenario is None and not settings.mixer_url:
        raise SettingsError(
            "give a SCENARIO file to run a standalone rack, or --mixer-url (mixer_url) to run "
            "the scenario a mixer pushes"
        )
    if args.scenario is not None and args.mixer_url:
        raise SettingsError(
            f"--mixer-url and a SCENARIO file ({args.scenario}) exclude each other: a rack "
            "managed by a mixer runs the scenario the mixer pushes; drop one of them"
        )
    setup_logging(settings.log_level, settings.log_format)
    return run_async(serve(args.scenario, settings, rack_name=args.name))


def cmd_scenario_validate(args: argparse.Namespace) -> int:
    registry = GearRegistry.discover()
    try:
        blueprint = preflight_file(args.file, registry)
    except ScenarioError as exc:
        print(f"{args.file}: {exc.summary}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    memory = sum(1 for w in blueprint.wires if w.transport == "memory")
    print(
        f"{args.file}: scenario '{blueprint.name}' is valid: {len(blueprint.gears)} gears, "
        f"{len(blueprint.wires)} wires ({memory} memory, {len(blueprint.wires) - memory} standard)"
    )
    return 0


def cmd_gears_list(args: argparse.Namespace) -> int:
    if args.remote:
        from rack.ops_cli import cmd_gears_remote

        return cmd_gears_remote(args)
    if args.json or args.api_url or args.api_token:
        raise FluxError("--api-url, --api-token and --json go with --remote")
    registry = GearRegistry.discover()
    rows = [
        (name, ",".join(g.inputs) or "-", ",".join(g.outputs) or "-", g.summary)
        for name, g in registry.items()
    ]
    widths = [max(len(r[i]) for r in [("TYPE", "IN", "OUT", ""), *rows]) for i in range(3)]
    print(f"{'TYPE':<{widths[0]}}  {'IN':<{widths[1]}}  {'OUT':<{widths[2]}}  SUMMARY")
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    for name, error in sorted(registry.load_errors.items()):
        print(f"! {name}: failed to load: {error}", file=sys.stderr)
    return 0


def cmd_gears_doc(args: argparse.Namespace) -> int:
    registry = GearRegistry.discover()
    if args.all:
        pages = render_all(registry)
        if args.write is None:
            for name, text in pages.items():
                print(f"<!-- {name} -->\n{text}")
            return 0
        args.write.mkdir(parents=True, exist_ok=True)
        for stale in args.write.glob("*.md"):
            if stale.name not in pages:
                stale.unlink()
        for name, text in pages.items():
            (args.write / name).write_text(text, encoding="utf-8")
        print(f"wrote {len(pages)} pages to {args.write}")
        return 0
    if not args.type:
        raise FluxError("name a gear type, or pass --all")
    print(render_gear_page(args.type, registry.get(args.type)))
    return 0


def settings_page() -> str:
    from rack.settings import ENV_PREFIX, RackSettings

    return render_settings_page(
        RackSettings,
        title="Rack settings",
        intro="Generated from `rack.settings.RackSettings` by `make docs`. Precedence: "
        "`[rack]` table of `fluxrig.toml` < `FLUXRIG_*` environment < `fluxrig run` flags.",
        env=ENV_PREFIX,
    )


def cmd_docs(args: argparse.Namespace) -> int:
    """Regenerate every generated reference page (gears and settings)."""
    gears_dir = args.write / "gears"
    cmd_gears_doc(argparse.Namespace(all=True, write=gears_dir, type=None))
    (args.write / "settings.md").write_text(settings_page(), encoding="utf-8")
    print(f"wrote {args.write / 'settings.md'}")
    return 0


def cmd_gears_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_schema(GearRegistry.discover().get(args.type)), indent=2))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"fluxrig {__version__}")
    return 0


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from rack import ops_cli

    parser = argparse.ArgumentParser(prog="fluxrig", description="fluxrig rack and operator CLI")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run a rack: on a scenario file, or managed by a mixer (--mixer-url)"
    )
    run.add_argument(
        "scenario",
        type=Path,
        nargs="?",
        help="scenario YAML, or the seed's fluxrig.toml form (omit with --mixer-url)",
    )
    run.add_argument("--config", type=Path, help="rack settings file (default ./fluxrig.toml)")
    run.add_argument("--name", help="rack name (runs only this rack's gears of the scenario)")
    run.add_argument("--state-dir", type=Path)
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--log-format", choices=["text", "json"])
    run.add_argument("--grace-period", type=float, help="seconds to drain on stop")
    run.add_argument("--queue-depth", type=int, help="capacity of each memory wire inbox")
    run.add_argument("--machine-id", type=int, help="16-bit machine id for fluxIDs")
    run.add_argument("--no-watch", action="store_true", help="do not reload on file change")
    run.add_argument("--nats-url", help="use this NATS for standard wires (no embedded server)")
    run.add_argument(
        "--mixer-url",
        help="no scenario file: enroll with the mixer whose NATS hub is at this URL and run "
        "what it pushes once adopted",
    )
    run.set_defaults(func=cmd_run)

    scenario = sub.add_parser(
        "scenario", help="scenario files, and scenarios stored on a mixer"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = scenario.add_parser("validate", help="pre-flight check a scenario file")
    validate.add_argument("file", type=Path)
    validate.set_defaults(func=cmd_scenario_validate)

    gears = sub.add_parser("gears", help="the gear catalogue").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    gears_list = gears.add_parser("list", help="list gear types")
    gears_list.set_defaults(func=cmd_gears_list)
    ops_cli.add_gears_remote(gears_list)
    doc = gears.add_parser("doc", help="reference page of a gear type")
    doc.add_argument("type", nargs="?")
    doc.add_argument("--all", action="store_true", help="every gear plus the index")
    doc.add_argument("--write", type=Path, help="with --all: write the pages into this folder")
    doc.set_defaults(func=cmd_gears_doc)
    schema = gears.add_parser("schema", help="JSON schema of a gear's config")
    schema.add_argument("type")
    schema.set_defaults(func=cmd_gears_schema)

    from rack import dlq_cli, keys_cli, tail_cli, telemetry_cli

    dlq_cli.add_parser(sub)
    keys_cli.add_parser(sub)
    ops_cli.add_parsers(sub, scenario)
    telemetry_cli.add_parser(sub)
    tail_cli.add_parser(sub)
    docs = sub.add_parser("docs", help="regenerate the generated reference pages")
    docs.add_argument("--write", type=Path, default=Path("docs"), help="docs folder")
    docs.set_defaults(func=cmd_docs)

    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    return parser


def cmd_dlq(args: argparse.Namespace) -> int:
    from rack.dlq_cli import run_dlq

    return run_async(run_dlq(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dlq":
        args.func = cmd_dlq
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UnknownGearError as exc:
        print(f"fluxrig: {exc}", file=sys.stderr)
        return 1
    except ScenarioError as exc:
        print(f"fluxrig: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:  # the mixer refused, or cannot be reached: message + details
        print(f"fluxrig: {exc}", file=sys.stderr)
        return 1
    except FluxError as exc:
        print(f"fluxrig: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
