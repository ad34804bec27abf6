"""The worker client and the supervisor against stand-in workers (test_worker_host.py's): each operation
sends the message bridge/ops.py declares, a death comes back as the host's outcome, and a recovery after a
crash reloads the contexts and restores the variables, naming what it could not bring back, without
touching the session's state itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlm_mcp.bridge import ops
from rlm_mcp.errors import UserError
from rlm_mcp.host.client import WorkerClient
from rlm_mcp.host.supervisor import WorkerSupervisor
from tests.conftest import make_settings
from tests.unit.host.test_worker_host import host

pytestmark = pytest.mark.anyio

# Echoes every request it gets (as "got") and logs it to $LOG; "exec" of the code "die" kills it, and
# "restore" brings back every digest but the one of the variable "planted", which it says is lost.
ECHO = """\
import json
log = open(os.environ['LOG'], 'a')
while (r := frames.read_frame(inp)) is not None:
    log.write(json.dumps(r) + '\\n'); log.flush()
    if r.get('op') == 'exec' and r.get('code') == 'die':
        os._exit(3)
    reply = {'id': r['id'], 'ok': True, 'got': r}
    if r.get('op') == 'restore':
        reply['restored'] = sorted(n for n in r['digests'] if n != 'planted')
        reply['lost'] = {'planted': 'it would not unpickle'} if 'planted' in r['digests'] else {}
    frames.write_frame(1, reply)
"""


def echo_client(tmp_path: Path) -> tuple[WorkerClient, Path]:
    worker = host(tmp_path, ECHO)
    log = tmp_path / "requests.jsonl"
    worker.env["LOG"] = str(log)
    return WorkerClient(worker, grace=1.0), log


def sent(log: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(line).items() if k != "id"} for line in log.read_text().splitlines()]


async def test_each_operation_sends_its_declared_message(tmp_path: Path) -> None:
    client, log = echo_client(tmp_path)
    try:
        load = ops.LoadRequest(name="logs", kind="text", text="hello")
        calls = [
            await client.exec("x = 1", 4, 500, timeout=5),
            await client.load(load, timeout=5),
            await client.unload("logs"),
            await client.eval_text("x", timeout=5),
            await client.variables(),
            await client.persist(tmp_path / "snapshot", 1024),
            await client.restore({"x": "ab" * 32}, timeout=5),
        ]
        assert [outcome.fate for outcome in calls] == ["ok"] * 7
        assert sent(log) == [
            {"op": ops.EXEC, "code": "x = 1", "cell": 4, "output_limit": 500},
            {"op": ops.LOAD, "name": "logs", "kind": "text", "text": "hello"},
            {"op": ops.UNLOAD, "name": "logs"},
            {"op": ops.EVAL_TEXT, "expr": "x"},
            {"op": ops.VARIABLES},
            {"op": ops.PERSIST, "dir": str(tmp_path / "snapshot"), "max_bytes": 1024},
            {"op": ops.RESTORE, "digests": {"x": "ab" * 32}},
        ]
        assert calls[-1].reply is not None and calls[-1].reply["restored"] == ["x"]
        assert set(ops.HOST_REQUESTS) == {request["op"] for request in sent(log)}  # every operation has its method
    finally:
        await client.close()


async def test_a_worker_that_dies_of_an_operation_is_a_crashed_outcome(tmp_path: Path) -> None:
    client, _ = echo_client(tmp_path)
    try:
        outcome = await client.exec("die", 1, 100, timeout=5)
        assert outcome.fate == "crashed" and outcome.reply is None
        assert "exited with code 3" in outcome.cause
        assert not client.alive
    finally:
        await client.close()


@dataclass
class Context:
    name: str


async def test_the_supervisor_recovers_a_crash_reloading_contexts_and_restoring_variables(
    tmp_path: Path, data_dir: Path
) -> None:
    client, log = echo_client(tmp_path)
    contexts = {name: Context(name) for name in ("logs", "gone", "notes")}
    unloadable: list[str] = []
    saved: list[bool] = []

    async def plan(context: Context) -> tuple[ops.LoadRequest, None]:
        if context.name == "gone":
            raise UserError("no such file under the roots any more")
        return ops.LoadRequest(name=context.name, kind="text", text=f"the {context.name}"), None

    supervisor = WorkerSupervisor(
        "s1",
        client,
        make_settings(tmp_path, data_dir),
        contexts=lambda: list(contexts.values()),
        plan=plan,
        unloadable=unloadable.append,
        save_record=lambda: saved.append(True),
        resuming=False,
        digests={"x": "1" * 64},
    )
    try:
        outcome, notes = await supervisor.call(lambda worker: worker.variables())
        assert outcome.fate == "ok" and [request["op"] for request in sent(log)] == [ops.PERSIST, ops.VARIABLES]
        supervisor.note_snapshot({"planted": "2" * 64, "y": "3" * 64}, dropped=["x"])
        log.write_text("")

        outcome, notes = await supervisor.call(lambda worker: worker.exec("die", 2, 100, timeout=5))
        assert outcome.fate == "crashed" and client.alive and client.starts == 2
        assert [(request["op"], request.get("name")) for request in sent(log)] == [
            (ops.EXEC, None),  # the cell it died of, then the fresh worker's
            (ops.PERSIST, None),
            (ops.LOAD, "logs"),
            (ops.LOAD, "notes"),
            (ops.RESTORE, None),
        ]
        assert sent(log)[-1]["digests"] == {"planted": "2" * 64, "y": "3" * 64}
        assert "contexts reloaded: logs, notes" in notes
        assert any("could not be reloaded" in note and "gone (no such file" in note for note in notes)
        assert "variables restored from the last successful cell: y" in notes
        assert "variables lost: planted (it would not unpickle)" in notes
        # It told the session what to drop, and dropped nothing itself; its own digests forget the lost one.
        assert unloadable == ["gone"] and list(contexts) == ["logs", "gone", "notes"]
        assert supervisor.snapshot_digests == {"y": "3" * 64} and saved == [True]
    finally:
        await client.close()
