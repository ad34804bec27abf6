"""The worker's side of its requests (worker/channel.py): RLMAnswer moved here from worker/repl.py (issue 27),
and snapshots that name it at its old home still restore."""

from __future__ import annotations

import io
import pickle
import sys
import types

import pytest

from rlm_mcp.worker import snapshot
from rlm_mcp.worker.channel import RLMAnswer


def test_a_snapshot_naming_rlm_answer_at_worker_repl_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    old_path = "rlm_mcp.worker.repl"
    module = types.ModuleType(old_path)  # pickled as an old snapshot was: under worker.repl
    module.RLMAnswer = RLMAnswer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, old_path, module)
    monkeypatch.setattr(RLMAnswer, "__module__", old_path)
    data = pickle.dumps([RLMAnswer("best so far", partial=True, stopped="max_iterations", iterations=7)])
    monkeypatch.undo()
    assert b"rlm_mcp.worker.repl" in data and b"worker.channel" not in data
    (answer,) = snapshot._Unpickler(io.BytesIO(data)).load()
    assert type(answer) is RLMAnswer and answer == "best so far"
    assert (answer.partial, answer.stopped, answer.iterations) == (True, "max_iterations", 7)
