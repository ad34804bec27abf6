"""The `rlm-mcp` command: parse the flags, load the settings and hand over to rlm_mcp/commands/.

Serving over stdio, the way MCP clients launch it, is the default command. Flags are generated from the
Settings declarations, so `--help` always lists every setting with its environment variable and default.
Each subcommand is a module of rlm_mcp/commands/, imported only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlm_mcp import __version__
from rlm_mcp.config import Settings, env_name, flag_name, load_settings
from rlm_mcp.errors import SettingsError

DESCRIPTION = (
    "Recursive Language Model server for the Model Context Protocol. Serves over stdio; "
    "every flag can also be set with the environment variable named in its help. "
    "`rlm-mcp doctor [flags]` prints which sandbox layers this machine provides; `rlm-mcp sessions` lists the "
    "saved sessions (`--delete ID` removes one); `rlm-mcp trace FILE.jsonl -o trace.html` renders a session's "
    "trace as one self-contained HTML page (`rlm-mcp trace --follow SESSION` serves it on 127.0.0.1 while the "
    "session runs); `rlm-mcp replay TRACE` re-runs a session's cells against its recorded sub-call answers; "
    "`rlm-mcp ask PATH... QUESTION [--model M] [--json] "
    "[--trace-html FILE]` runs the whole RLM with a configured root model and prints the answer (exit 0: "
    "answered, 1: failed, 2: bad input, 3: stopped at a cap with a partial answer); `rlm-mcp eval` measures it "
    "on the long-context tasks (see `rlm-mcp eval --help`); `rlm-mcp handbook list|show|edit|delete|export|import|"
    "distill|findings|wipe` reads and edits the workspace's memory (see `rlm-mcp handbook --help`)."
)


def _default_text(field: str) -> str:
    info = Settings.model_fields[field]
    if info.default_factory is not None:
        return "see description"
    return str(info.default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-mcp", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"rlm-mcp {__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "doctor", "sessions", "trace", "ask", "eval"],
        default="serve",
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "arguments", nargs="*", metavar="ARG", help="with `trace`: the trace; with `ask`: the paths, then the question"
    )
    parser.add_argument("-o", "--output", metavar="FILE.html", help="with `trace`: where to write the page")
    parser.add_argument(
        "--follow", action="store_true", help="with `trace`: serve the page on 127.0.0.1, updated as the session runs"
    )
    parser.add_argument(
        "--follow-port", metavar="PORT", type=int, default=0, help="with `trace --follow`: the port (default: any free)"
    )
    parser.add_argument("--delete", metavar="ID", help="with `sessions`: delete the saved session ID")
    parser.add_argument("--model", metavar="MODEL", help="with `ask`: the root model (as --root-model)")
    parser.add_argument("--json", action="store_true", help="with `ask`: print the answer and its usage as JSON")
    parser.add_argument("--trace-html", metavar="FILE", type=Path, help="with `ask`: write the run's trace page")
    for field, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        help_text = f"{info.description} [env {env_name(field)}; default: {_default_text(field)}]"
        kwargs: dict[str, Any] = {"dest": field, "help": help_text, "default": None}
        if isinstance(extra.get("metavar"), str):
            kwargs["metavar"] = extra["metavar"]
        annotation = info.annotation
        if typing.get_origin(annotation) is tuple:
            kwargs.update(action="append", type=typing.get_args(annotation)[0])
        elif typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif annotation is bool:
            kwargs.update(action="store_const", const=True)
        elif annotation in (int, float, Path):
            kwargs["type"] = annotation
        parser.add_argument(flag_name(field), **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["eval"]:  # its own flags (rlm-mcp eval --help)
        from rlm_mcp.commands.eval import main as evaluate

        return evaluate(arguments[1:])
    if arguments[:1] == ["handbook"]:  # its own subcommands (rlm-mcp handbook --help)
        from rlm_mcp.commands.handbook import main as handbook

        return handbook(arguments[1:])
    if arguments[:1] == ["replay"]:  # its own flags (rlm-mcp replay --help)
        from rlm_mcp.commands.replay import main as replay

        return replay(arguments[1:])
    args = build_parser().parse_intermixed_args(arguments)  # `trace --follow SESSION`: a flag before the paths
    if args.command == "trace" and not args.follow:
        from rlm_mcp.commands.trace import render

        return render(args.arguments[0] if args.arguments else None, args.output)
    if args.command not in ("ask", "trace") and args.arguments:
        print(f"rlm-mcp {args.command}: unexpected arguments {' '.join(args.arguments)}", file=sys.stderr)
        return 2
    overrides = {field: getattr(args, field) for field in Settings.model_fields}
    if args.model:
        overrides["root_model"] = args.model
    try:
        settings = load_settings(overrides)
    except SettingsError as exc:
        print(f"rlm-mcp: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per sub-call is noise
    settings.workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return _run_command(args, settings)
    except SettingsError as exc:  # also a session-signing key that cannot be used
        print(f"rlm-mcp: {exc}", file=sys.stderr)
        return 2


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Each command's module is imported only when it runs: `--help` and `--version` stay instant."""
    if args.command == "trace":
        from rlm_mcp.commands.trace import follow_session

        return follow_session(settings, args.arguments, args.follow_port)
    if args.command == "ask":
        from rlm_mcp.commands.ask import run as ask

        return ask(settings, args.arguments, args.json, args.trace_html)
    if args.command == "sessions":
        from rlm_mcp.commands.sessions import run as sessions

        return sessions(settings, args.delete)
    if args.command == "doctor":
        from rlm_mcp.commands.doctor import run_doctor

        return run_doctor(settings)
    from rlm_mcp.commands.serve import run as serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
