"""`rlm-mcp handbook`: read, edit, move and wipe the workspace's memory, review what models proposed for
it, and distil a saved session.

Every text printed here was written by a model after reading untrusted inputs (or by a user), so each goes
through `printable` on its way to the terminal. What models distil or remember is a proposal that no model
is shown until a person approves it here (`review`, then `approve ID...` or `reject ID...`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp import safefs
from rlm_mcp.config import Settings, load_settings
from rlm_mcp.errors import HandbookError, MemoryUnavailable, SettingsError
from rlm_mcp.escaping import printable
from rlm_mcp.memory import answers, findings, handbook
from rlm_mcp.memory.database import APPROVED, FILENAME, LEGACY, Database, decide_entry
from rlm_mcp.units import MiB

EXPORT_FORMAT = "rlm-mcp-handbook"
EXPORT_MAX_BYTES = 16 * MiB
WIPE_PARTS = ("all", "behaviors", "findings", "cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-mcp handbook",
        description="The workspace's memory: behaviors distilled from sessions, findings per input, the sub-call "
        "answer cache. Settings (workspace, backend) as for the server, from RLM_MCP_* or --workspace.",
    )
    parser.add_argument("--workspace", type=Path, help="the server's workspace (default: as the server's)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every behavior, its use counts; the sizes of findings and cache")
    show = commands.add_parser("show", help="one behavior with its provenance")
    show.add_argument("name")
    edit = commands.add_parser("edit", help="change a behavior's texts")
    edit.add_argument("name")
    edit.add_argument("--instruction")
    edit.add_argument("--when", dest="applies")
    edit.add_argument("--input-kind")
    delete = commands.add_parser("delete", help="remove a behavior")
    delete.add_argument("name")
    export = commands.add_parser("export", help="the handbook as JSON (stdout, or -o FILE)")
    export.add_argument("-o", "--output", type=Path)
    load = commands.add_parser("import", help="merge behaviors from an exported file")
    load.add_argument("file", type=Path)
    distill = commands.add_parser("distill", help="distil a saved session's trace now (uses the sub-model)")
    distill.add_argument("session")
    commands.add_parser("findings", help="the latest findings, with the input digest they are filed under")
    commands.add_parser("review", help="what models proposed (behaviors b<N>, findings f<N>), for approve or reject")
    for verb, what in (("approve", "offer them to models from now on"), ("reject", "delete them")):
        decide = commands.add_parser(verb, help=f"decide proposals by their ids from review: {what}")
        decide.add_argument("ids", nargs="*", metavar="ID")
        decide.add_argument("--all", action="store_true", help="every proposal review listed (needs --upto)")
        decide.add_argument(
            "--upto", metavar="MARK", help="with --all: the mark review printed last (b<N>,f<N>); nothing newer"
        )
    wipe = commands.add_parser("wipe", help="delete the memory, or one part of it")
    wipe.add_argument("part", nargs="?", choices=WIPE_PARTS, default="all")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings({"workspace": args.workspace})
    except SettingsError as exc:
        print(f"rlm-mcp handbook: {exc}", file=sys.stderr)
        return 2
    database = Database(settings.workspace)
    try:
        return _run(args, settings, database)
    except (HandbookError, MemoryUnavailable, OSError, ValueError) as exc:
        print(f"rlm-mcp handbook: {printable(str(exc))}", file=sys.stderr)
        return 1
    finally:
        database.close()


def _run(args: argparse.Namespace, settings: Settings, database: Database) -> int:
    command = args.command
    if command == "wipe":
        return _wipe(settings, database, args.part)
    if command == "distill":
        return _distill(settings, database, args.session)
    if command == "review":
        return _review(database)
    if command in ("approve", "reject"):
        return _decide(database, args.ids, args.all, args.upto, approve=command == "approve")
    if command == "list":
        behaviors = database.run(lambda c: handbook.all_behaviors(c))
        for behavior in behaviors:
            counts = (
                f"[{behavior.uses} uses, {behavior.good_uses} in sessions that ended well, merged {behavior.merged}x]"
            )
            status = "" if behavior.status == APPROVED else f"  (proposal b{behavior.id}: not shown to models)"
            print(f"{printable(behavior.name)}  {counts}{status}\n    {printable(behavior.instruction)}")
        (found, found_pending), cache = database.run(lambda c: (findings.counts(c), answers.stats(c)))
        pending = sum(behavior.status != APPROVED for behavior in behaviors)
        print(
            f"{len(behaviors)} behaviors; {found} findings; sub-call cache: {cache['entries']} answers, "
            f"{cache['bytes'] / MiB:.1f} MiB, {cache['hits']} hits ({database.path})"
        )
        if pending or found_pending:
            print(f"{pending} behaviors and {found_pending} findings await review: rlm-mcp handbook review")
        return 0
    if command == "show":
        behavior = database.run(lambda c: handbook.get(c, args.name, with_sources=True))
        print(json.dumps(_printable_json(behavior.as_json()), indent=2, ensure_ascii=False))
        return 0
    if command == "edit":
        changes = {"instruction": args.instruction, "applies": args.applies, "input_kind": args.input_kind}
        if all(value is None for value in changes.values()):
            print("rlm-mcp handbook edit: give --instruction, --when or --input-kind", file=sys.stderr)
            return 2
        behavior = database.run(lambda c: handbook.edit(c, args.name, **changes))
        print(f"{printable(behavior.name)}: {printable(behavior.instruction)}")
        return 0
    if command == "delete":
        database.run(lambda c: handbook.delete(c, args.name))
        print(f"deleted {printable(handbook.canonical_name(args.name))}")
        return 0
    if command == "export":
        behaviors = database.run(lambda c: handbook.all_behaviors(c, with_sources=True))
        exported = {"format": EXPORT_FORMAT, "version": 1, "behaviors": [b.as_json() for b in behaviors]}
        text = json.dumps(exported, indent=2) + "\n"  # ASCII: no control or bidi character reaches a terminal
        if args.output is None:
            sys.stdout.write(text)
        else:
            safefs.write_atomic(args.output, text.encode("utf-8"))
            print(f"wrote {len(behaviors)} behaviors to {printable(str(args.output))}", file=sys.stderr)
        return 0
    if command == "import":
        return _import(database, args.file)
    if command == "findings":
        for item in database.run(lambda c: findings.listed(c, 200)):
            day = time.strftime("%Y-%m-%d", time.localtime(float(str(item["created"]))))
            status = "" if item["status"] == APPROVED else f"  [proposal f{item['id']}]"
            print(
                f"{str(item['digest'])[:12]}  {day}  {printable(str(item['text']))}  ({printable(str(item['source']))})"
                + status
            )
        return 0
    raise AssertionError(command)


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(when))


LEGACY_NOTE = "made before approval existed: a proposal like the others until approved"


def _review(database: Database) -> int:
    """Every proposal with its id, its text escaped and where it came from; nothing here is shown to a model."""
    behaviors, found = database.run(
        lambda c: (handbook.proposals(c), findings.listed(c, findings.MAX_FINDINGS, proposals=True))
    )  # every one: the stores are bounded, and --all decides only what a review has shown
    if not behaviors and not found:
        print("nothing to review: no model's proposal waits for approval")
        return 0
    print(
        f"{len(behaviors)} behaviors and {len(found)} findings proposed by models; none is shown to a model until "
        "approved (rlm-mcp handbook approve ID... | reject ID...):"
    )
    for behavior in behaviors:
        when = f" (when: {printable(behavior.applies)})" if behavior.applies else ""
        origin = f"proposed by session {printable(behavior.session or '?')}, {_day(behavior.created)}"
        legacy = f"; {LEGACY_NOTE}" if behavior.status == LEGACY else ""
        print(f"b{behavior.id}  behavior {printable(behavior.name)}: {printable(behavior.instruction)}{when}")
        print(f"      {origin}, from {len(behavior.sources)} sources{legacy}")
    for item in reversed(found):
        how = "remembered" if item["origin"] == "remember" else "distilled"
        about = f"{printable(str(item['source']))} (content {str(item['digest'])[:12]})"
        legacy = f"; {LEGACY_NOTE}" if item["status"] == LEGACY else ""
        print(f"f{item['id']}  finding about {about}: {printable(str(item['text']))}")
        print(f"      {how} by session {printable(str(item['session']))}, {_day(float(str(item['created'])))}{legacy}")
    mark = f"b{max((b.id for b in behaviors), default=0)},f{max((int(str(i['id'])) for i in found), default=0)}"
    print(f"to decide every one listed above: rlm-mcp handbook approve --all --upto {mark} (or reject ...)")
    return 0


def _mark(text: str | None) -> dict[str, int]:
    """--upto's b<N>,f<N>: the newest ids a review listed (proposals filed since it have larger ids)."""
    found = re.fullmatch(r"b(\d+),f(\d+)", (text or "").strip())
    if found is None:
        raise ValueError(
            "--all approves or rejects only what a review showed: add the --upto b<N>,f<N> that "
            "`rlm-mcp handbook review` prints last"
        )
    return {"b": int(found[1]), "f": int(found[2])}


def _decide(database: Database, ids: list[str], every: bool, upto: str | None, approve: bool) -> int:
    """Approve or reject proposals by id (b<N> a behavior, f<N> a finding), or with --all every one a review
    listed: up to the mark it printed, so nothing filed since, and nothing no one was shown, is decided."""
    verb = "approve" if approve else "reject"
    if every == bool(ids):
        print(f"rlm-mcp handbook {verb}: give the ids `rlm-mcp handbook review` lists, or --all", file=sys.stderr)
        return 2
    wanted: list[tuple[str, int]] = []
    for identifier in ids:
        kind, number = identifier[:1].lower(), identifier[1:]
        if kind not in ("b", "f") or not number.isdigit():
            raise ValueError(f"{identifier!r} is not an id of `rlm-mcp handbook review` (b12, f34)")
        wanted.append((kind, int(number)))
    mark = _mark(upto) if every else {}

    def decide(connection: Any) -> list[str]:
        if every:
            chosen = [("b", b.id) for b in handbook.proposals(connection) if b.id <= mark["b"]]
            listed = findings.listed(connection, findings.MAX_FINDINGS, proposals=True)
            chosen += [("f", number) for number in (int(str(item["id"])) for item in listed) if number <= mark["f"]]
        else:
            chosen = wanted
        done = []
        for kind, number in chosen:
            text = decide_entry(connection, "behaviors" if kind == "b" else "findings", number, approve)
            if text is None:
                raise ValueError(f"no {'behavior' if kind == 'b' else 'finding'} {kind}{number}; review lists them")
            done.append(f"{kind}{number} {printable(text, 80)}")
        return done

    done = database.run(decide)  # one transaction: an unknown id decides nothing
    said = "approved (offered to models from now on)" if approve else "rejected (deleted)"
    print(f"{said}: {len(done)}" + "".join(f"\n  {line}" for line in done))
    return 0


def _printable_json(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {key: _printable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable_json(item) for item in value]
    return value


def _import(database: Database, file: Path) -> int:
    """Merge an export's behaviors as proposals (each checked and bounded like a distilled one); their
    counts start at zero here: another workspace's successes are its claims, not ours."""
    data = json.loads(safefs.read_bounded(file, EXPORT_MAX_BYTES))
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT or not isinstance(data.get("behaviors"), list):
        raise ValueError(f"{file} is not a handbook export (rlm-mcp handbook export writes one)")
    outcomes = {"added": 0, "merged": 0, "dropped": 0}
    source = f"import:{file.name}"

    def merge(connection: Any) -> None:
        for item in data["behaviors"][: handbook.MAX_BEHAVIORS]:
            try:
                outcome, _ = handbook.add(connection, handbook.proposed_from(item), source, quota=None)
                outcomes["dropped" if outcome == "refused" else outcome] += 1
            except HandbookError:
                outcomes["dropped"] += 1

    database.run(merge)
    print(f"imported from {printable(str(file))}: {outcomes['added']} added, {outcomes['merged']} merged, "
          f"{outcomes['dropped']} dropped; those added are proposals (rlm-mcp handbook review)")  # fmt: skip
    return 0


def _wipe(settings: Settings, database: Database, part: str) -> int:
    if part == "all":
        if not (settings.workspace / FILENAME).exists():
            print("there was no memory to wipe")
            return 0
        database.wipe()
        print(f"wiped the memory ({settings.workspace / FILENAME}): every behavior, finding and cached answer")
        return 0
    table = {"behaviors": "behaviors", "findings": "findings", "cache": "answers"}[part]
    count = database.run(lambda c: c.execute(f"DELETE FROM {table}").rowcount)
    print(f"deleted {count} {part if part != 'cache' else 'cached answers'}")
    return 0


def _distill(settings: Settings, database: Database, session_id: str) -> int:
    """A saved session's trace distilled now, with the server's sub-model settings."""
    database.close()  # the memory service opens its own connection
    report = anyio.run(_distill_saved, settings, session_id)
    print(printable(report))
    return 0 if not report.startswith("nothing distilled: no sub-model") else 1


async def _distill_saved(settings: Settings, session_id: str) -> str:
    from rlm_mcp.llm.router import Router, SessionLLM
    from rlm_mcp.memory.service import Memory
    from rlm_mcp.session.learning import distill_trace, planned_input
    from rlm_mcp.session.loading import LoadedContext
    from rlm_mcp.session.store import SessionStore
    from rlm_mcp.trace import Tracer

    store = SessionStore(settings.workspace)
    try:
        directory = store.directory(session_id)
    except ValueError as exc:
        raise ValueError(f"{exc}; `rlm-mcp sessions` lists them") from None
    trace = directory / "trace.jsonl"
    if not trace.is_file():
        raise ValueError(f"session {session_id} has no trace in {directory}; `rlm-mcp sessions` lists them")
    record = store.load(session_id) or {}
    inputs = {}
    for item in record.get("contexts") or []:
        context = LoadedContext.from_record(item)
        if context is not None:
            try:
                inputs[context.name] = await planned_input(context, settings)
            except Exception:  # a context that cannot be planned today gets no findings
                continue
    memory = Memory(settings)
    router = Router(settings, memory)
    try:
        # Its calls go to a trace of their own: a server may be appending to the session's, numbering its events.
        tracer = Tracer(directory / "distill-trace.jsonl")
        report = await distill_trace(memory, SessionLLM(router), trace, tracer, session_id, inputs)
    finally:
        await router.aclose()
        memory.close()
    return report.summary()
