"""The worker against its own limits: disk it hides from the cap, snapshots it sabotages, limits it raises.

Issue 26, sections 2 and 8 and the rlimit item, tried as a hijacked model would try them with run_code:
- files held open without a name (O_TMPFILE, unlinked while open, mapped and then closed) and directories
  stripped of their owner's rights must still count against the session's disk cap, and a cell over it is
  stopped with a result that says why;
- a FIFO or a link planted where a snapshot file goes must neither hang the next worker's restore nor the
  worker's own save, and only the planted name is lost;
- a cell cannot raise its resource limits above the policy (CPU included, whose backstop is set per cell).
"""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import anyio
import pytest
from mcp import Client

from rlm_mcp.host.factory import session_worker_host
from rlm_mcp.surface.server import build_server
from rlm_mcp.worker.lockdown import seccomp
from tests.conftest import make_settings, run, text_of, value_of
from tests.test_memory_caps import run_filter
from tests.test_sandbox import needs

pytestmark = pytest.mark.anyio

CALL_LIMIT_S = 60  # a bounded wait: a call that blocks (a FIFO opened by the worker) fails the test
CAP_MB, FILE_MB = 16, 8  # three files within the per-file limit are together over the session's cap
OVER_CAP = f"over this session's cap of {CAP_MB} MiB"

HIDE_OPEN_FILES = f"""
import os, tempfile, time
held = []
for way in ("tmpfile", "tmpfile", "unlinked"):
    if way == "tmpfile":
        fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)
    else:
        fd, name = tempfile.mkstemp(dir=".")
        os.unlink(name)
    os.posix_fallocate(fd, 0, {FILE_MB} << 20)
    held.append(fd)
sorted(os.listdir()), time.sleep(60)
"""
# Mapped, then closed and unlinked: no descriptor and no name are left, only the mapping.
HIDE_MAPPED_FILES = f"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
mapped = []
for i in range(3):
    fd = os.open(f"mapped{{i}}", os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    os.posix_fallocate(fd, 0, {FILE_MB} << 20)
    mapped.append(libc.mmap(None, 4096, 1, 1, fd, 0))  # PROT_READ, MAP_SHARED
    os.close(fd)
    os.unlink(f"mapped{{i}}")
assert all(address not in (None, ctypes.c_void_p(-1).value) for address in mapped), mapped
sorted(os.listdir()), time.sleep(60)
"""
HIDE_BEHIND_CHMOD = f"""
import os, time
os.makedirs("hidden/deeper", exist_ok=True)
for i in range(3):
    with open(f"hidden/deeper/fill{{i}}", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, {FILE_MB} << 20)
os.chmod("hidden/deeper", 0)
os.chmod("hidden", 0)
time.sleep(60)
"""


def cap_settings(tmp_path: Path, data_dir: Path) -> object:
    return make_settings(tmp_path, data_dir, disk_limit_mb=CAP_MB, write_limit_mb=FILE_MB)


async def stopped_over_the_cap(client: Client, code: str) -> str:
    """Run `code` (which holds more than the cap and then sleeps) and check it was stopped for the cap."""
    with anyio.fail_after(CALL_LIMIT_S):
        result = await run(client, code, timeout_s=120)
    data = result.structured_content
    assert data is not None and data["outcome"] != "ok", text_of(result)
    assert OVER_CAP in text_of(result), text_of(result)
    return text_of(result)


# -- section 2: the disk cap counts every byte the worker holds ---------------------------------------------


async def test_files_held_open_without_a_name_count_against_the_disk_cap(tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(cap_settings(tmp_path, data_dir))) as client:
        shown = await stopped_over_the_cap(client, HIDE_OPEN_FILES)
        assert "open without a name" in shown, shown
        # still held after the interrupt: the next cell is told, and would be stopped as well
        again = await run(client, "len(held)")
        assert "open without a name" in text_of(again), text_of(again)
        # the cell was interrupted, so its descriptors are still held: the model closes them and goes on
        closed = await run(client, "import os\nfor fd in held: os.close(fd)\nlen(held)")
        assert closed.structured_content["outcome"] == "ok", text_of(closed)  # type: ignore[index]
        assert "cap" not in text_of(closed), text_of(closed)


async def test_files_mapped_then_closed_and_unlinked_count_against_the_disk_cap(tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(cap_settings(tmp_path, data_dir))) as client:
        await stopped_over_the_cap(client, HIDE_MAPPED_FILES)


async def test_directories_stripped_of_their_owners_rights_are_still_counted(tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(cap_settings(tmp_path, data_dir))) as client:
        await stopped_over_the_cap(client, HIDE_BEHIND_CHMOD)
        cleaned = await run(client, "import shutil\nshutil.rmtree('hidden')\nsorted(os.listdir())")
        assert cleaned.structured_content["result"] == "[]", text_of(cleaned)  # type: ignore[index]
        assert "cap" not in text_of(cleaned), text_of(cleaned)


# -- section 8: what is planted in the snapshot directory ----------------------------------------------------


async def test_a_fifo_planted_for_one_snapshot_loses_that_name_only_and_never_hangs_the_restore(
    tmp_path: Path, data_dir: Path
) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        await value_of(client, "x = 1\ny = 2\nx + y")
        planted = await run(client, "import os\nos.unlink('../snapshot/x.pickle')\nos.mkfifo('../snapshot/x.pickle')")
        assert planted.structured_content["outcome"] == "ok", text_of(planted)  # type: ignore[index]
        with anyio.fail_after(CALL_LIMIT_S):
            crashed = await run(client, "import os\nos._exit(1)")
        shown = text_of(crashed)
        assert crashed.structured_content["outcome"] == "crashed", shown  # type: ignore[index]
        assert "variables lost: x (" in shown and "not a regular file" in shown, shown
        assert "variables restored from the last successful cell: os, y\n" in shown, shown
        assert await value_of(client, "y") == "2"
        assert "NameError" in text_of(await run(client, "x"))


async def test_a_fifo_or_a_link_planted_where_a_snapshot_is_written_neither_hangs_nor_redirects_the_save(
    tmp_path: Path, data_dir: Path
) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir, timeout_s=15))) as client:
        plant = (
            "import os\n"
            "os.makedirs('../snapshot', exist_ok=True)\n"
            "open('victim.txt', 'w').write('untouched')\n"
            "os.mkfifo('../snapshot/y.pickle.tmp')\n"
            "os.symlink(os.path.abspath('victim.txt'), '../snapshot/z.pickle.tmp')\n"
            "y = 'why'\n"
            "z = 'zed'"
        )
        with anyio.fail_after(CALL_LIMIT_S):
            saved = await run(client, plant)
        assert saved.structured_content["outcome"] == "ok", text_of(saved)  # type: ignore[index]
        assert await value_of(client, "open('victim.txt').read()") == "'untouched'"
        with anyio.fail_after(CALL_LIMIT_S):
            crashed = await run(client, "import os\nos._exit(1)")
        assert "y, z" in text_of(crashed), text_of(crashed)
        assert await value_of(client, "y + z") == "'whyzed'"


SLOW_TO_RESTORE = """
import time
class Sleeper:
    def __reduce__(self):  # unpickling it calls time.sleep(3600)
        return (time.sleep, (3600,))
kept = 2
zz_slow = Sleeper()
"""


async def test_a_value_whose_unpickling_never_ends_costs_only_itself_and_a_bounded_wait(
    tmp_path: Path, data_dir: Path
) -> None:
    async with Client(
        build_server(make_settings(tmp_path, data_dir, timeout_s=5, max_timeout_s=5, wait_s=5))
    ) as client:
        saved = await run(client, SLOW_TO_RESTORE)
        assert saved.structured_content["outcome"] == "ok", text_of(saved)  # type: ignore[index]
        with anyio.fail_after(CALL_LIMIT_S):
            crashed = await run(client, "import os\nos._exit(1)")
            while crashed.structured_content["outcome"] == "running":  # type: ignore[index]
                crashed = await client.call_tool("run_code", {})  # waits wait_s more for the cell's result
        shown = text_of(crashed)
        assert "variables lost: zz_slow (restoring it ran past the time limit" in shown, shown
        assert "variables restored from the last successful cell: kept" in shown, shown
        assert await value_of(client, "kept") == "2"


# -- also: limits only ever go down --------------------------------------------------------------------------

RAISE_LIMITS = """
import resource
refused, raised = [], []
for name in ("RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_NOFILE"):
    limit = getattr(resource, name)
    try:
        resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        refused.append(name)
    else:
        raised.append(name)
raised, refused, resource.getrlimit(resource.RLIMIT_CPU)[0] != resource.RLIM_INFINITY
"""


async def test_a_cell_cannot_raise_its_resource_limits(tmp_path: Path, data_dir: Path) -> None:
    needs("processes")  # the CPU limit is the host's to set per cell; seccomp keeps the cell's hands off it
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        shown = await value_of(client, RAISE_LIMITS)
        assert shown == "([], ['RLIMIT_CPU', 'RLIMIT_DATA', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE'], True)", shown
        # the per-cell backstop is still set, by the host, for every cell
        assert await value_of(client, "resource.getrlimit(resource.RLIMIT_CPU)[0] != resource.RLIM_INFINITY") == "True"


async def test_the_cpu_backstop_stops_a_cell_that_tried_to_lift_it(tmp_path: Path, data_dir: Path) -> None:
    needs("processes")
    host = session_worker_host(make_settings(tmp_path, data_dir), tmp_path / "session")
    host.policy = dataclasses.replace(host.policy, cell_cpu_s=1)  # the backstop at one second of CPU
    spin = (
        "import resource\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_CPU, (-1, -1))\n"
        "except ValueError:\n"  # refused, as the test above checks: spin anyway
        "    pass\n"
        "while True: pass"
    )
    try:
        with anyio.fail_after(CALL_LIMIT_S):
            outcome = await host.call({"op": "exec", "code": spin, "cell": 1}, timeout=30, grace=1)
        assert outcome.fate == "crashed" and "SIGXCPU" in outcome.cause, (outcome.fate, outcome.cause)
    finally:
        await host.close()


def test_the_filter_keeps_cell_code_off_the_cpu_limit_and_threads_on_one_descriptor_table() -> None:
    """The seccomp rules behind the tests above, run by hand as the kernel would, on both architectures."""
    numbers = {"x86_64": (160, 302, 285), "aarch64": (164, 261, 47)}
    refused, allowed = seccomp.RET_ERRNO | errno.EPERM, seccomp.RET_ALLOW
    for machine, (setrlimit, prlimit64, fallocate) in numbers.items():
        table = seccomp.TABLES[machine]
        program = seccomp.build_program(table)

        def verdict(nr: int, *args: int, table: seccomp.Syscalls = table, program: list[bytes] = program) -> int:
            return run_filter(program, nr, table.audit_arch, args)

        cpu, data, address = 0, 2, 0x7FFC_1234_5678
        assert verdict(setrlimit, cpu, address) == refused
        assert verdict(setrlimit, data, address) == allowed  # lowering it is the kernel's to allow, never raising
        assert verdict(prlimit64, 0, cpu, address, 0) == refused
        assert verdict(prlimit64, 0, cpu, 0x7FFC_0000_0000, 0) == refused  # an address whose low word is zero
        assert verdict(prlimit64, 0, cpu, 0, address) == allowed  # reading it
        assert verdict(prlimit64, 0, data, address, 0) == allowed
        assert verdict(fallocate, 3, 0, 0, 8 << 20) == allowed
        for mode in (0x01, 0x03, 0x11):  # KEEP_SIZE, with PUNCH_HOLE, with ZERO_RANGE
            assert verdict(fallocate, 3, mode, 0, 8 << 20) == seccomp.RET_ERRNO | errno.EOPNOTSUPP, mode
        clone = table.numbers["clone"]
        assert verdict(clone, 0x3D0F00) == allowed  # glibc's pthread_create
        assert verdict(clone, seccomp.CLONE_THREAD | 0x100 | 0x800) == refused  # a thread with a table of its own
