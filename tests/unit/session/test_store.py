"""The signed session store: a record is good only for the session it was written for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlm_mcp.session.store import RECORD, SessionStore

RECORD_DATA = {"contexts": [], "snapshot": {}, "cells": 3}


def test_a_record_reads_back_as_written(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save("a" * 16, RECORD_DATA)
    loaded = store.load("a" * 16)
    assert loaded is not None and loaded["cells"] == 3


def test_a_validly_signed_record_copied_under_another_sessions_id_is_refused(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save("a" * 16, RECORD_DATA)
    other = store.directory("b" * 16)
    other.mkdir(mode=0o700)
    shutil.copy(store.directory("a" * 16) / RECORD, other / RECORD)
    assert store.load("b" * 16) is None  # the signature holds, but it names session aaaa...


def test_a_record_changed_on_disk_is_refused(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save("a" * 16, RECORD_DATA)
    path = store.directory("a" * 16) / RECORD
    stored = json.loads(path.read_text())
    stored["record"]["cells"] = 4
    path.write_text(json.dumps(stored))
    assert store.load("a" * 16) is None
