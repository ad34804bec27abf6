"""What the worker process is allowed to see and do.

First layer: the worker starts from an allow-list of environment variables, so API keys and tokens held
by the server never reach model-written code through os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH")


def worker_environment(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in PASSED_THROUGH if name in environ}
    env.setdefault("PATH", os.defpath)
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1")
    return env
