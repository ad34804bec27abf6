"""The security tests again, as an unprivileged user: the layers the sandbox gives an identity without root.

CI runs the suite as root, and root is not what a user's MCP client runs the server as: bubblewrap and user
namespaces, for one, behave differently without privileges. So, when this suite runs as root on Linux, the
security test files (tests/unprivileged.py: SECURITY_TESTS) run again in a child pytest as an unprivileged
user, and `rlm-mcp doctor` runs as both identities, each report checked against tests/test_sandbox.py's
probes run as that same identity. The terminal summary shows both identities' layers side by side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unprivileged import (
    CACHE_PREFIX,
    DEDICATED_USER,
    SECURITY_TESTS,
    Identity,
    Runtime,
    Unusable,
    current_identity,
    home_for,
    prepare,
    traversable_temp_dir,
    unprivileged_identity,
)

CHECKOUT = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 300
DOCTOR_TIMEOUT_S = 60
# Run as each identity: tests/test_sandbox.py's own probes, who is asking, and whether it holds capabilities.
PROBES = (
    "import json, os\n"
    "from tests.test_sandbox import MISSING\n"
    "status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
    "print(json.dumps({'uid': os.geteuid(), 'cap_eff': int(status['CapEff'], 16), 'missing': MISSING}))"
)
DOCTOR_LINE = re.compile(r"^  (yes|NO )  (\S+) ", re.MULTILINE)


@dataclass(eq=False)  # hashable by identity, as a plugin must be
class LayerTable:
    """Collects what each identity got; a pytest plugin, so the table is printed in the terminal summary."""

    layers: dict[str, dict[str, str]] = field(default_factory=dict)  # identity -> layer -> "yes" / "NO (why)"
    notes: list[str] = field(default_factory=list)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.layers or self.notes):
            return
        terminalreporter.write_sep("-", "sandbox layers per identity (tests/test_unprivileged.py)")
        names = list(dict.fromkeys(name for row in self.layers.values() for name in row))
        rows = [["layer", *self.layers]] + [
            [name, *(row.get(name, "?") for row in self.layers.values())] for name in names
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            terminalreporter.write_line("  ".join(cells).rstrip())
        for note in self.notes:
            terminalreporter.write_line(note)


@dataclass(frozen=True)
class Unprivileged:
    identity: Identity
    runtime: Runtime
    run_dir: Path
    table: LayerTable


@pytest.fixture(scope="session")
def unprivileged(request: pytest.FixtureRequest) -> Iterator[Unprivileged]:
    """An unprivileged identity and a runtime it can use, prepared once per run; skips saying what is missing."""
    if sys.platform != "linux":
        pytest.skip("not Linux: no setresuid-style identity switch to test the sandbox as another user")
    if os.geteuid() != 0:
        pytest.skip(f"not root (uid {os.geteuid()}): the suite itself already runs unprivileged")
    identity = unprivileged_identity()
    if identity is None:
        pytest.skip(f"no unprivileged user to switch to: neither {DEDICATED_USER} (.ci/run adds it) nor nobody exists")
    try:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}run-", dir=traversable_temp_dir()))
    except Unusable as exc:
        pytest.skip(str(exc))
    try:  # whatever happens from here on, the run's directory goes
        run_dir.chmod(0o755)
        try:
            runtime = prepare(identity, CHECKOUT, run_dir)
        except Unusable as exc:
            pytest.skip(f"{identity.name} cannot run the tests here: {exc}")
        table = LayerTable()
        request.config.pluginmanager.register(table, "rlm-mcp-layer-table")
        prepared = f"{runtime.description}; ready in {runtime.prepare_s:.1f} s"
        table.notes.append(f"{identity.name} (uid {identity.uid}): {prepared}")
        yield Unprivileged(identity, runtime, run_dir, table)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_security_tests_pass_as_an_unprivileged_user(unprivileged: Unprivileged) -> None:
    identity, runtime = unprivileged.identity, unprivileged.runtime
    files = [name for name in SECURITY_TESTS if (runtime.code / name.split("::")[0]).is_file()]
    home = home_for(identity, unprivileged.run_dir)
    command = [runtime.python, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={home / 'pytest'}", "-q", *files]
    started = time.monotonic()
    done = identity.run(command, env=runtime.env(home), cwd=runtime.code, timeout=CHILD_TIMEOUT_S)
    took = time.monotonic() - started
    last = (done.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    unprivileged.table.notes.append(f"{identity.name} ran {', '.join(files)}: {last} ({took:.1f} s with start-up)")
    unprivileged.table.notes += [f"  {line}" for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert done.returncode == 0, f"as {identity.name}: {' '.join(command)}\n{done.stdout}\n{done.stderr}"


def _layers_of(identity: Identity, unprivileged: Unprivileged) -> dict[str, str]:
    """Doctor's report for `identity`, each layer checked against the probes run as that identity."""
    runtime = unprivileged.runtime
    home = home_for(identity, unprivileged.run_dir)
    env = runtime.env(home)
    data = home / "data"
    data.mkdir(exist_ok=True)
    os.chown(data, identity.uid, identity.gid)
    doctor = [str(runtime.bin / "rlm-mcp"), "doctor", "--root", str(data), "--workspace", str(home / "ws")]
    done = identity.run(doctor, env={**env, "RLM_MCP_SANDBOX": "auto"}, cwd=home, timeout=DOCTOR_TIMEOUT_S)
    assert done.returncode == 0, f"doctor as {identity.name}:\n{done.stdout}\n{done.stderr}"
    reported = {name: mark == "yes" for mark, name in DOCTOR_LINE.findall(done.stdout.split("\nsub-call backends")[0])}
    probed = identity.run([runtime.python, "-c", PROBES], env=env, cwd=runtime.code, timeout=DOCTOR_TIMEOUT_S)
    assert probed.returncode == 0, f"probes as {identity.name}:\n{probed.stderr}"
    probes = json.loads(probed.stdout)
    assert probes["uid"] == identity.uid
    missing: dict[str, str | None] = probes["missing"]
    assert set(reported) == set(missing), done.stdout
    for name, why in missing.items():
        assert reported[name] == (why is None), f"as {identity.name}, {name}: probe says {why!r}\n{done.stdout}"
    if not identity.is_current:
        assert probes["cap_eff"] == 0, f"{identity.name} still holds capabilities {probes['cap_eff']:#x}"
    return {name: "yes" if missing[name] is None else f"NO ({missing[name]})" for name in reported}  # doctor's order


def test_each_identity_gets_the_layers_its_own_probes_find(unprivileged: Unprivileged) -> None:
    for identity in (current_identity(), unprivileged.identity):
        unprivileged.table.layers[f"{identity.name} (uid {identity.uid})"] = _layers_of(identity, unprivileged)
