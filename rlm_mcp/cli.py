"""The `rlm-mcp` command: serve over stdio, the way MCP clients launch it.

Flags are generated from the Settings declarations, so `--help` always lists every setting with its
environment variable and default.
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
from rlm_mcp.config import Settings, SettingsError, env_name, flag_name, load_settings

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
        from rlm_mcp.evaluation.run import main as evaluate

        return evaluate(arguments[1:])
    if arguments[:1] == ["handbook"]:  # its own subcommands (rlm-mcp handbook --help)
        from rlm_mcp.handbook_command import main as handbook

        return handbook(arguments[1:])
    if arguments[:1] == ["replay"]:  # its own flags (rlm-mcp replay --help)
        from rlm_mcp.replay import main as replay

        return replay(arguments[1:])
    args = build_parser().parse_intermixed_args(arguments)  # `trace --follow SESSION`: a flag before the paths
    if args.command == "trace" and not args.follow:
        return _trace(args.arguments[0] if args.arguments else None, args.output)
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
    if args.command == "trace":
        return _follow(settings, args.arguments, args.follow_port)
    if args.command == "ask":
        return _ask(settings, args.arguments, args.json, args.trace_html)
    if args.command == "sessions":
        return _sessions(settings, args.delete)
    if args.command == "doctor":
        from rlm_mcp.doctor import run_doctor

        return run_doctor(settings)
    if settings.transport == "http":
        from rlm_mcp.surface.http import serve

        serve(settings)
        return 0

    from rlm_mcp.surface.server import build_server  # deferred: `--help` and `--version` stay instant

    logging.getLogger("rlm_mcp").info("rlm-mcp %s serving over stdio; roots: %s", __version__, settings.roots)
    build_server(settings).run("stdio")
    return 0


def _ask(settings: Settings, arguments: list[str], as_json: bool, trace_html: Path | None) -> int:
    """Print the answer (stdout) and what it cost (stderr), or the whole result as JSON."""
    import json

    import anyio

    from rlm_mcp.engine.ask import AskError, ask
    from rlm_mcp.escaping import printable
    from rlm_mcp.tools.render import usage_line

    if len(arguments) < 2:
        print("rlm-mcp ask: give one or more paths, then the question: rlm-mcp ask logs/ 'why?'", file=sys.stderr)
        return 2
    *paths, question = arguments
    try:
        result = anyio.run(ask, settings, paths, question, trace_html)
    except AskError as exc:
        print(f"rlm-mcp ask: {exc}", file=sys.stderr)
        return 2
    code = 1 if result.stopped == "failed" else (3 if result.partial else 0)
    if as_json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
        return code
    if result.answer:  # the model's words, which a loaded file may steer: no escape reaches the terminal raw
        print("\n".join(printable(line) for line in result.answer.split("\n")))
    how = "answered" if result.stopped in ("answered", "answer variable") else f"stopped ({result.stopped})"
    print(
        f"[{how} in {result.iterations} turns, {result.elapsed_s:.1f} s; root {printable(result.model)}: "
        f"{usage_line(result.root)}; sub-calls: {usage_line(result.sub)}]",
        file=sys.stderr,
    )
    if result.error:
        print(f"rlm-mcp ask: {result.error}", file=sys.stderr)
    return code


def _trace(trace_file: str | None, output: str | None) -> int:
    from rlm_mcp.escaping import printable
    from rlm_mcp.viewer import write_html

    if not trace_file:
        print("rlm-mcp: give the trace: rlm-mcp trace SESSION_DIR/trace.jsonl -o trace.html", file=sys.stderr)
        return 2
    source = Path(trace_file)
    target = Path(output) if output else source.with_suffix(".html")
    try:
        written = write_html(source, target)
    except (OSError, ValueError) as exc:
        print(f"rlm-mcp: cannot render {printable(str(source))}: {printable(str(exc))}", file=sys.stderr)
        return 1
    print(f"wrote {printable(str(target))} ({written.events} events)")
    if written.problems:
        print(f"{written.problems} lines of the trace were skipped or changed; the page lists them", file=sys.stderr)
    return 0


def _follow(settings: Settings, arguments: list[str], port: int) -> int:
    """Serve a session's page while it runs: SESSION is a trace file, a session's directory or its id."""
    from rlm_mcp.escaping import printable
    from rlm_mcp.session.store import SESSION_ID
    from rlm_mcp.viewer.follow import follow

    if len(arguments) != 1:
        print("rlm-mcp trace --follow: give one session: its id, its directory or its trace.jsonl", file=sys.stderr)
        return 2
    given = Path(arguments[0])
    if given.is_dir():
        given = given / "trace.jsonl"
    elif not given.exists() and SESSION_ID.fullmatch(arguments[0]):
        given = settings.workspace / "sessions" / arguments[0] / "trace.jsonl"
    if not given.parent.is_dir():
        print(f"rlm-mcp trace --follow: no session at {printable(str(given.parent))}", file=sys.stderr)
        return 2
    try:
        return follow(given, port)
    except OSError as exc:
        print(f"rlm-mcp trace --follow: cannot serve on 127.0.0.1:{port}: {printable(str(exc))}", file=sys.stderr)
        return 1


def _sessions(settings: Settings, delete: str | None) -> int:
    """List the saved sessions (id, last use, contexts, saved variables), or delete one.

    Context names and ids come from records that model-written code had a hand in, and go to a terminal:
    each is printed through `printable`, so an ANSI escape or a newline in one shows as text.
    """
    import time

    from rlm_mcp.escaping import printable
    from rlm_mcp.memory.service import session_tag
    from rlm_mcp.session.store import SessionStore

    store = SessionStore(settings.workspace)
    if delete is not None:
        if not store.delete(delete):
            print(f"rlm-mcp: no saved session '{printable(delete)}' in {printable(str(store.root))}", file=sys.stderr)
            return 1
        print(f"deleted session {printable(delete)}")
        return 0
    for session in store.list():
        try:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.get("updated") or 0))
        except (TypeError, ValueError, OverflowError, OSError):
            when = "?"
        contexts = ", ".join(printable(str(name), 200) for name in session["contexts"]) or "no contexts"
        tag = session_tag(str(session["id"]))  # how the memory names it (rlm-mcp handbook show, findings)
        print(
            f"{printable(str(session['id']), 200)}  {when}  {contexts}; {session['variables']} saved variables; "
            f"memory tag {tag}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
