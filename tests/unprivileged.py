"""Running the security tests as an unprivileged user, from a suite that runs as root (as CI does).

Root passes every permission check, so a sandbox test run only as root cannot show what an ordinary user
gets (bubblewrap and user namespaces behave differently without privileges, for one). This module finds an
unprivileged identity and builds what it needs to run pytest: an interpreter it may execute, and a
world-readable copy of the checkout and of the installed dependencies. The checkout and this interpreter
may sit where that identity cannot look (a 0700 temporary clone, pyenv under /root).

The dependencies are copied file by file from the installed distributions (their RECORD), so the copy has
exactly the versions the suite runs with and needs no network; it is kept across runs, keyed by those
versions. The checkout is copied afresh for every run.
"""

from __future__ import annotations

import compileall
import dataclasses
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The test files (or single tests, as file::name) that must also pass as an unprivileged user; those absent
# from the checkout are left out.
SECURITY_TESTS = (
    "tests/test_sandbox.py",
    "tests/test_memory_caps.py",
    "tests/test_attacks.py",
    "tests/test_child_rlm.py",  # the depth cap and budget shares hold for any user
    "tests/test_memory.py",  # hostile distilled text stays inert; the memory file is the user's, mode 0600
    "tests/test_replay.py",  # a forged trace is refused, and a replay's code runs sandboxed, for any user
    # issue 26: the surfaces added since the sandbox, each held for any user
    "tests/test_security_gaps.py",  # the one-line guards: roots, the worker's environment, stderr, signatures
    "tests/test_security_worker.py",  # the disk cap, planted snapshot files, lower-only limits
    "tests/test_security_cli.py",  # no process holding a secret readable by the worker, in any sandbox mode
    "tests/test_remote.py",  # URLs checked as sent, crawled links and redirects, fetched copies bounded
    "tests/test_cluster.py",  # map code locked down on the node, nothing a map made unpickled in the server
    "tests/test_telemetry.py",  # without --otel-texts no data leaves, for any user
    "tests/test_http.py::test_two_authorization_headers_are_refused_whichever_comes_first",
    "tests/test_handbook_cli.py::test_review_lists_proposals_and_approve_or_reject_decides",
    "tests/test_handbook_cli.py::test_approve_all_decides_only_what_a_review_showed",
)
# Created by .ci/run; `nobody` stands in where it does not exist.
DEDICATED_USER = "rlm-mcp-test"
# What of the checkout the tests may need: what the sdist ships (pyproject.toml), and the pytest settings.
CHECKOUT_PARTS = (
    "rlm_mcp",
    "tests",
    "testkit",
    "bench",
    "docs",
    "bundle",
    "plugin",
    "README.md",
    "server.json",
    "pyproject.toml",
)
# The distributions to copy, with everything they require; rlm-mcp itself is copied from the checkout.
ROOT_REQUIREMENTS = ("rlm-mcp[test,sandbox]", "pytest", "anyio")
CACHE_PREFIX = "rlm-mcp-unprivileged-"
CACHE_FORMAT = "1"  # bump when the layout of the copy changes
IMPORT_CHECK = "import sys; assert sys.version_info[:2] == {version!r}; import anyio, mcp, pytest, rlm_mcp"
CHECK_TIMEOUT_S = 60


class Unusable(Exception):
    """No unprivileged run is possible here; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run `argv` as this identity: real, effective and saved ids switched, no supplementary groups.

        The child switches before exec (setgroups, setregid, setreuid), so it holds no capabilities from then
        on, as a user's own process. Not setpriv: it keeps root's capabilities up to its exec of `argv`, so
        that exec would pass where the user's own would fail (an interpreter under /root, mode 0700).
        """
        if not self.is_current:
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)


def current_identity() -> Identity:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return Identity(name, uid, os.getegid())


def unprivileged_identity() -> Identity | None:
    """The dedicated test user if .ci/run created it, else `nobody`; None if neither exists."""
    for lookup in (lambda: pwd.getpwnam(DEDICATED_USER), lambda: pwd.getpwnam("nobody"), lambda: pwd.getpwuid(65534)):
        try:
            entry = lookup()
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)
    return None


@dataclasses.dataclass(frozen=True)
class Runtime:
    """An interpreter and import path an identity can use; `env` is the whole environment of its commands."""

    python: str
    code: Path  # the copy of the checkout: the working directory of the tests
    bin: Path  # holds the `rlm-mcp` console script
    site: Path | None  # the copied dependencies, None when the interpreter's own are readable
    description: str
    prepare_s: float

    def env(self, home: Path) -> dict[str, str]:
        path = [str(self.code)] + ([str(self.site)] if self.site else [])
        return {
            "PATH": os.pathsep.join([str(self.bin), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }


def home_for(identity: Identity, run_dir: Path) -> Path:
    """A directory owned by `identity` (for HOME, TMPDIR, pytest's --basetemp), outside the code's copy."""
    home = run_dir / f"home-{identity.uid}"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    for path in (home, home / "tmp"):
        os.chown(path, identity.uid, identity.gid)
        path.chmod(0o700)
    return home


def traversable_temp_dir() -> Path:
    """A temporary directory every user can reach (TMPDIR may be private), where others cannot tamper."""
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        path = Path(candidate).resolve()
        if path.is_dir() and _reachable_by_all(path) and _safe_parent(path):
            return path
    raise Unusable("no temporary directory that every user can traverse (tried $TMPDIR, /tmp, /var/tmp, /dev/shm)")


def _reachable_by_all(path: Path) -> bool:
    return all(part.stat().st_mode & stat.S_IXOTH for part in (path, *path.parents))


def _safe_parent(path: Path) -> bool:
    """Others may write here only if the sticky bit stops them from moving or removing our entries."""
    mode = path.stat().st_mode
    return not mode & (stat.S_IWGRP | stat.S_IWOTH) or bool(mode & stat.S_ISVTX)


def prepare(identity: Identity, checkout: Path, run_dir: Path) -> Runtime:
    """An interpreter `identity` can run with rlm-mcp, its dependencies and pytest importable; or Unusable.

    This interpreter if `identity` can already use it; else a system Python of the same version with a
    copy of the dependencies. `run_dir` must be reachable by everyone and owned by us.
    """
    started = time.monotonic()
    code = run_dir / "code"
    _copy_checkout(checkout, code)
    bin_dir = run_dir / "bin"
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    home = home_for(identity, run_dir)
    version = sys.version_info[:2]
    tried: list[str] = []
    runtime = Runtime(sys.executable, code, bin_dir, None, f"{sys.executable} with its own packages", 0.0)
    if _usable(identity, runtime, home, version, tried):
        return _finish(runtime, started)
    site, how = cached_dependencies(run_dir)
    for python in dict.fromkeys([sys.executable, f"/usr/bin/python{version[0]}.{version[1]}", _which_version()]):
        if python and os.path.exists(python):
            runtime = Runtime(python, code, bin_dir, site, f"{python} with a copy of the dependencies ({how})", 0.0)
            if _usable(identity, runtime, home, version, tried):
                return _finish(runtime, started)
    raise Unusable(f"no Python {version[0]}.{version[1]} that {identity.name} can run: " + "; ".join(tried))


def _which_version() -> str | None:
    return shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/local/bin:/usr/bin:/bin")


def _finish(runtime: Runtime, started: float) -> Runtime:
    script = runtime.bin / "rlm-mcp"
    script.write_text(f"#!{runtime.python}\nimport sys\nfrom rlm_mcp.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return dataclasses.replace(runtime, prepare_s=time.monotonic() - started)


def _usable(identity: Identity, runtime: Runtime, home: Path, version: tuple[int, int], tried: list[str]) -> bool:
    """Whether `identity` can really start the interpreter and import what the tests import."""
    check = IMPORT_CHECK.format(version=version)
    try:
        done = identity.run([runtime.python, "-c", check], env=runtime.env(home), timeout=CHECK_TIMEOUT_S, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        tried.append(f"{runtime.description}: {exc}")
        return False
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        tried.append(f"{runtime.description}: {last}")
    return done.returncode == 0


def _copy_checkout(checkout: Path, code: Path) -> None:
    code.mkdir(mode=0o755)
    for part in CHECKOUT_PARTS:
        source = checkout / part
        if source.is_dir():
            shutil.copytree(source, code / part, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        elif source.is_file():
            shutil.copy2(source, code / part)
    compileall.compile_dir(code / "rlm_mcp", quiet=2)  # the identity cannot write the bytecode cache itself
    _open_to_all(code)


def _open_to_all(top: Path) -> None:
    """Everyone may read everything under `top` and run what is executable; only the owner writes."""
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)


# -- the dependencies ----------------------------------------------------------------------------------------


def dependency_closure() -> list[metadata.Distribution]:
    """The installed distributions ROOT_REQUIREMENTS need here (markers evaluated), rlm-mcp excluded."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, metadata.Distribution] = {}
    pending = [Requirement(text) for text in ROOT_REQUIREMENTS]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise Unusable(f"{requirement.name} is not installed for {sys.executable}") from None
        if key[0] != "rlm-mcp":
            found[key[0]] = dist
        for text in dist.requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(needed)
    return sorted(found.values(), key=lambda dist: canonicalize_name(dist.metadata["Name"]))


def cached_dependencies(run_dir: Path) -> tuple[Path, str]:
    """A world-readable copy of the dependency closure beside `run_dir`, reused while the versions stay the same."""
    closure = dependency_closure()
    pins = "\n".join(f"{dist.metadata['Name']}=={dist.version}" for dist in closure)
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{sys.implementation.cache_tag}\n{pins}".encode()).hexdigest()[:16]
    final = run_dir.parent / f"{CACHE_PREFIX}site-{key}"
    count = f"{len(closure)} distributions"
    if _trusted_copy(final):
        return final, f"{count}, cached in {final}"
    if os.path.lexists(final):  # someone else's: never run code from it, and do not share ours
        _copy_closure(closure, pins, run_dir / "site")
        return run_dir / "site", f"{count}, copied for this run only ({final} is not ours)"
    building = Path(tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}building-", dir=run_dir.parent))
    try:
        _copy_closure(closure, pins, building)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    try:
        os.rename(building, final)
    except OSError:  # another run made the same copy first, or someone took the name meanwhile
        shutil.rmtree(building, ignore_errors=True)
        if not _trusted_copy(final):
            raise Unusable(f"{final} appeared meanwhile and is not ours") from None
    return final, f"{count}, copied to {final}"


def _copy_closure(closure: list[metadata.Distribution], pins: str, target: Path) -> None:
    for dist in closure:
        _copy_distribution(dist, target)
    (target / "PINS.txt").write_text(pins + "\n")  # written last: marks the copy complete
    _open_to_all(target)


def _trusted_copy(path: Path) -> bool:
    """Complete, and made by us: root runs code from it, so nobody else may have written it."""
    try:
        info = path.lstat()
    except OSError:
        return False
    ours = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    return ours and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and (path / "PINS.txt").is_file()


def _copy_distribution(dist: metadata.Distribution, target: Path) -> None:
    site = Path(str(dist.locate_file(""))).resolve()
    if dist.files is None:
        raise Unusable(f"{dist.metadata['Name']} has no RECORD of its files, so it cannot be copied")
    for relative in _inside(dist.files, site):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(site / relative, destination)


def _inside(files: Iterable[metadata.PackagePath], site: Path) -> Iterator[Path]:
    """The recorded files under the site directory (not console scripts in bin/, nor missing ones)."""
    for file in files:
        relative = Path(os.path.normpath(file))
        if not relative.is_absolute() and ".." not in relative.parts and (site / relative).is_file():
            yield relative
