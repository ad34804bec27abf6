"""Snapshots written before the package was laid out by trust boundary name the worker's classes by their
old module paths; they still restore."""

from __future__ import annotations

import io
import pickle
import sys
import types

import pytest

from rlm_mcp.worker import snapshot
from rlm_mcp.worker.errors import LLMError
from rlm_mcp.worker.helpers import Hits


def test_pickles_that_name_the_old_module_paths_restore_as_todays_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls, old_path in ((LLMError, "rlm_mcp.repl.worker"), (Hits, "rlm_mcp.repl.helpers")):
        module = types.ModuleType(old_path)  # pickled as an old snapshot was: under the old path
        setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, old_path, module)
        monkeypatch.setattr(cls, "__module__", old_path)
    data = pickle.dumps([LLMError("rate limited", "rate_limited"), Hits()], protocol=pickle.HIGHEST_PROTOCOL)
    monkeypatch.undo()  # today's tree again: no module of the old paths exists
    assert (
        b"rlm_mcp.repl.worker" in data and b"rlm_mcp.repl.helpers" in data and "rlm_mcp.repl.worker" not in sys.modules
    )
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(data)
    error, hits = snapshot._Unpickler(io.BytesIO(data)).load()
    assert isinstance(error, LLMError) and isinstance(hits, Hits)
