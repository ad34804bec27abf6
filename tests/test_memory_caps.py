"""Memory that RLIMIT_DATA does not count: shared anonymous mappings, memfd files, SysV segments.

RLIMIT_DATA caps private writable memory only; shared anonymous memory is shmem and escapes it. Where a
cgroup v2 is delegated, a worker's own memory.max would count it; where not (this machine included) the
seccomp filter refuses it. The attacks run through the real server and MCP client, as model-written code
would run them; the filter is also checked instruction by instruction for both architectures, and the
cgroup code against a fake /sys/fs/cgroup made of regular files (no real cgroup is ever touched here).
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.commands.doctor import memory_line
from rlm_mcp.host.proctree import descendants
from rlm_mcp.sandbox import cgroups
from rlm_mcp.worker.lockdown import guard, seccomp
from tests.conftest import make_settings, value_of
from tests.test_sandbox import MISSING, error_of, needs, run_doctor, still_serving

pytestmark = pytest.mark.anyio

REFUSED = (
    "PermissionError: shared anonymous memory is disabled in the rlm-mcp sandbox because it escapes the memory cap"
)
LIBC = (
    "import ctypes, os, platform\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = libc.mmap.restype = libc.shmat.restype = ctypes.c_void_p\n"
    "MAP_FAILED = ctypes.c_void_p(-1).value\n"
    "def refused(result):\n"
    "    if result in (-1, MAP_FAILED):\n"
    "        number = ctypes.get_errno()\n"
    "        raise OSError(number, os.strerror(number))\n"
    "    return result\n"
)
MMAP_NR = {"x86_64": 9, "aarch64": 222}


async def keep_a_variable(client: Client) -> None:
    assert await value_of(client, "kept = 'still here'; kept") == "'still here'"


async def the_variable_is_kept(client: Client) -> None:
    """The same worker serves on: a replacement would have lost the variable."""
    assert await value_of(client, "kept") == "'still here'"
    await still_serving(client)


async def test_a_shared_anonymous_mmap_from_python_is_refused_and_the_worker_lives(client: Client) -> None:
    needs("processes")
    await keep_a_variable(client)
    for call in (
        "mmap.mmap(-1, 6 << 30)",
        "mmap.mmap(-1, 6 << 30, flags=mmap.MAP_SHARED)",
        "mmap.mmap(-1, 4096, mmap.MAP_SHARED | mmap.MAP_PRIVATE)",  # MAP_SHARED_VALIDATE
        "mmap.mmap(-1, 6 << 30, access=mmap.ACCESS_WRITE)",
        "mmap.mmap(fileno=-1, length=4096, access=mmap.ACCESS_READ)",
    ):
        error = await error_of(client, f"import mmap\nm = {call}")
        assert REFUSED in error and "flags=mmap.MAP_PRIVATE" in error and "working directory" in error, call
        assert "guard.py" not in error
    # Around the Python-level check, straight to the original class: the kernel's filter says ENOMEM.
    original = "type(mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE)).__mro__[1]"
    error = await error_of(client, f"import mmap\nm = {original}(-1, 6 << 30)")
    assert "OSError: [Errno 12] Cannot allocate memory" in error
    await the_variable_is_kept(client)


async def test_a_raw_shared_anonymous_mmap_through_ctypes_is_refused(client: Client) -> None:
    needs("processes")
    await keep_a_variable(client)
    shared_anonymous = 0x01 | 0x20
    # the high word of the flags does not matter to the kernel's verdict, nor to the filter's
    for flags in (shared_anonymous, 0x03 | 0x20, shared_anonymous | (1 << 32)):
        syscall = (
            f"refused(libc.syscall(ctypes.c_long({MMAP_NR}[platform.machine()]), None, ctypes.c_size_t(6 << 30), "
            f"ctypes.c_long(3), ctypes.c_long({flags}), ctypes.c_long(-1), ctypes.c_long(0)))"
        )
        error = await error_of(client, LIBC + syscall)
        assert "OSError: [Errno 12] Cannot allocate memory" in error, hex(flags)
    wrapper = "refused(libc.mmap(None, ctypes.c_size_t(6 << 30), 3, 0x21, -1, ctypes.c_long(0)))"
    assert "OSError: [Errno 12]" in await error_of(client, LIBC + wrapper)
    await the_variable_is_kept(client)


async def test_memfd_create_is_refused(client: Client) -> None:
    needs("processes")
    await keep_a_variable(client)
    error = await error_of(client, "import os\nfd = os.memfd_create('big')")
    assert REFUSED in error
    error = await error_of(client, LIBC + "refused(libc.memfd_create(b'big', 0))")
    assert "OSError: [Errno 12] Cannot allocate memory" in error
    await the_variable_is_kept(client)


async def test_sysv_shared_memory_is_refused(client: Client) -> None:
    needs("processes")
    await keep_a_variable(client)
    shmget = "refused(libc.shmget(0, ctypes.c_size_t(6 << 30), 0o1600))"  # IPC_PRIVATE, IPC_CREAT | 0600
    assert "OSError: [Errno 12] Cannot allocate memory" in await error_of(client, LIBC + shmget)
    shmat = "refused(libc.shmat(0, None, 0))"
    assert "OSError: [Errno 12] Cannot allocate memory" in await error_of(client, LIBC + shmat)
    await the_variable_is_kept(client)


async def test_private_memory_and_shared_file_mappings_still_work(client: Client) -> None:
    needs("processes")
    private = (
        "import mmap\n"
        "m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE)\n"
        "m[-5:] = b'tail!'\n"
        "c = mmap.mmap(-1, 1 << 20, access=mmap.ACCESS_COPY)\n"
        "c[:2] = b'ok'\n"
        "m[-5:], c[:2], isinstance(m, mmap.mmap), len(bytearray(64 << 20))"
    )
    assert await value_of(client, private) == f"(b'tail!', b'ok', True, {64 << 20})"
    shared_file = (
        "import mmap\n"
        "with open('mapped.bin', 'wb') as f:\n"
        "    f.write(b'.' * 4096)\n"
        "with open('mapped.bin', 'r+b') as f, mmap.mmap(f.fileno(), 0) as m:\n"
        "    m[:6] = b'shared'\n"
        "    m.flush()\n"
        "open('mapped.bin', 'rb').read(6)"
    )
    assert await value_of(client, shared_file) == "b'shared'"
    # ctypes callbacks need libffi's closure memory, which must not depend on shared or memfd memory
    callback = (
        "import ctypes\n"
        "values = (ctypes.c_int * 5)(5, 1, 4, 2, 3)\n"
        "compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))(\n"
        "    lambda a, b: a[0] - b[0])\n"
        "ctypes.CDLL(None).qsort(values, 5, ctypes.sizeof(ctypes.c_int), compare)\n"
        "list(values)"
    )
    assert await value_of(client, callback) == "[1, 2, 3, 4, 5]"


async def test_threads_still_work(client: Client) -> None:
    needs("processes")
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(32) as pool:\n"
        "    blocks = list(pool.map(lambda n: len(bytearray(n << 20)), range(1, 33)))\n"
        "sum(blocks)"
    )
    assert await value_of(client, code) == str(sum(n << 20 for n in range(1, 33)))


async def test_no_shared_anonymous_memory_exists_to_grow_and_dev_zero_is_closed(client: Client) -> None:
    """mremap can only resize what exists: the worker starts with no shared mapping but of regular files."""
    needs("filesystem")
    code = (
        "import os\n"
        "shared = [line.split() for line in open('/proc/self/maps') if line.split()[1][3] == 's']\n"
        "[fields[5:] for fields in shared if len(fields) < 6 or not os.path.isfile(fields[5])]"
    )
    assert await value_of(client, code) == "[]"
    assert "PermissionError" in await error_of(client, "open('/dev/zero', 'rb')")


def test_the_filter_refuses_shared_anonymous_memory_on_both_architectures() -> None:
    """Run the BPF program by hand, as the kernel would, for each architecture's table."""
    numbers = {"x86_64": (9, 319, 29, 30), "aarch64": (222, 279, 194, 196)}
    for machine, (mmap_nr, memfd_nr, shmget_nr, shmat_nr) in numbers.items():
        table = seccomp.TABLES[machine]
        assert (table.numbers["mmap"], table.numbers["memfd_create"]) == (mmap_nr, memfd_nr)
        assert (table.numbers["shmget"], table.numbers["shmat"]) == (shmget_nr, shmat_nr)
        program = seccomp.build_program(table)

        def verdict(nr: int, *args: int, arch: int = table.audit_arch, program: list[bytes] = program) -> int:
            return run_filter(program, nr, arch, args)

        enomem = seccomp.RET_ERRNO | errno.ENOMEM
        mmap_args = (0, 6 << 30, 3)
        assert verdict(mmap_nr, *mmap_args, 0x01 | 0x20) == enomem  # MAP_SHARED | MAP_ANONYMOUS
        assert verdict(mmap_nr, *mmap_args, 0x03 | 0x20) == enomem  # MAP_SHARED_VALIDATE
        assert verdict(mmap_nr, *mmap_args, 0x01 | 0x20 | 0x4000 | (0xFF << 32)) == enomem
        assert verdict(mmap_nr, *mmap_args, 0x02 | 0x20) == seccomp.RET_ALLOW  # private anonymous
        assert verdict(mmap_nr, *mmap_args, 0x01, 3) == seccomp.RET_ALLOW  # a shared file
        assert verdict(mmap_nr, *mmap_args, 0x02, 3) == seccomp.RET_ALLOW
        for nr in (memfd_nr, shmget_nr, shmat_nr, 447):  # 447: memfd_secret on both
            assert verdict(nr) == enomem, (machine, nr)
        assert verdict(table.numbers["clone"], seccomp.CLONE_THREAD | seccomp.CLONE_FILES) == seccomp.RET_ALLOW
        assert verdict(table.numbers["clone"], 17) == seccomp.RET_ERRNO | errno.EPERM  # SIGCHLD: a fork
        assert verdict(mmap_nr, *mmap_args, 0x21, arch=0x40000003) == seccomp.RET_KILL_PROCESS  # i386


def run_filter(program: list[bytes], nr: int, arch: int, args: tuple[int, ...]) -> int:
    """A classic-BPF interpreter for the instructions seccomp.py uses, over a little-endian seccomp_data."""
    padded = (*args, *[0] * (6 - len(args)))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *[value & (2**64 - 1) for value in padded])
    accumulator, pc = 0, 0
    while True:
        code, jump_true, jump_false, k = struct.unpack("=HBBI", program[pc])
        pc += 1
        if code == seccomp.LD_W_ABS:
            accumulator = struct.unpack_from("<I", data, k)[0]
        elif code == seccomp.RET_K:
            return k
        elif code in (seccomp.JEQ_K, seccomp.JGE_K, seccomp.JSET_K):
            taken = {
                seccomp.JEQ_K: accumulator == k,
                seccomp.JGE_K: accumulator >= k,
                seccomp.JSET_K: bool(accumulator & k),
            }[code]
            pc += jump_true if taken else jump_false
        else:
            raise AssertionError(f"instruction {code:#x} is not interpreted here")


@pytest.mark.parametrize(
    ("args", "kwargs", "shared"),
    [
        ((-1, 4096), {}, True),
        ((-1, 4096, mmap.MAP_SHARED), {}, True),
        ((-1, 4096), {"flags": mmap.MAP_PRIVATE}, False),
        ((-1, 4096, mmap.MAP_PRIVATE), {}, False),
        ((-1, 4096), {"access": mmap.ACCESS_COPY}, False),
        ((-1, 4096), {"access": mmap.ACCESS_READ}, True),
        ((), {"fileno": -1, "length": 4096, "access": mmap.ACCESS_WRITE}, True),
        ((3, 4096), {}, False),
        ((3, 0), {"access": mmap.ACCESS_READ}, False),
    ],
)
def test_the_python_level_check_reads_mmaps_arguments_as_the_c_code_does(
    args: tuple[int, ...], kwargs: dict[str, int], shared: bool
) -> None:
    assert guard.shared_anonymous(args, kwargs) is shared


# -- cgroups, against a fake tree: regular files standing in for cgroupfs --------------------------------------

V1_PROC_SELF_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/job/1\n1:cpu:/\n0::/\n"


def fake_cgroup(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def fake_tree(tmp_path: Path, own: str, **server_files: str) -> tuple[Path, Path, Path]:
    """A cgroup2 root, the server's cgroup at `own`, and a /proc/self/cgroup naming it."""
    root = fake_cgroup(tmp_path / "cgroup", {"cgroup.controllers": "cpu io memory pids", "cgroup.procs": "1\n"})
    server = fake_cgroup(
        root / own,
        {
            "cgroup.controllers": "cpu memory pids",
            "cgroup.procs": f"{os.getpid()}\n",
            "cgroup.subtree_control": "",
            **server_files,
        },
    )
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::/{own}\n")
    return root, server, proc


def test_cgroup_v1_is_not_delegation(tmp_path: Path) -> None:
    root, _, proc = fake_tree(tmp_path, "user.slice/rlm.scope")
    proc.write_text(V1_PROC_SELF_CGROUP)
    support = cgroups.cgroup_support(str(root), str(proc))
    assert not support.delegated and support.reason == "cgroup v1 (owned by the host system)"
    with pytest.raises(OSError, match="not delegated"):
        support.prepare()


def test_without_cgroup2_at_the_root_or_controllers_there_is_no_delegation(tmp_path: Path) -> None:
    root, server, proc = fake_tree(tmp_path, "user.slice/rlm.scope")
    (root / "cgroup.controllers").unlink()
    support = cgroups.cgroup_support(str(root), str(proc))
    assert not support.delegated and "not mounted" in support.reason
    (root / "cgroup.controllers").write_text("memory pids")
    (server / "cgroup.controllers").write_text("cpu memory")
    support = cgroups.cgroup_support(str(root), str(proc))
    assert not support.delegated and "pids not in" in support.reason


def test_a_cgroup_the_server_shares_with_other_processes_is_left_alone(tmp_path: Path) -> None:
    root, server, proc = fake_tree(tmp_path, "user.slice/rlm.scope")
    (server / "cgroup.procs").write_text(f"{os.getpid()}\n4242\n")
    support = cgroups.cgroup_support(str(root), str(proc))
    assert not support.delegated and "other processes" in support.reason


def test_a_delegated_cgroup_is_prepared_by_moving_the_server_into_a_leaf(tmp_path: Path) -> None:
    root, server, proc = fake_tree(tmp_path, "user.slice/rlm.scope")
    support = cgroups.cgroup_support(str(root), str(proc))
    assert support.delegated, support.reason
    assert support.parent == str(server) and support.server_leaf == str(server / "rlm-mcp-server")
    assert support.prepare(pid=4321) == str(server)
    assert (server / "rlm-mcp-server" / "cgroup.procs").read_text() == "4321"
    assert (server / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_a_prepared_layout_needs_nothing_more(tmp_path: Path) -> None:
    root, server, proc = fake_tree(tmp_path, "delegated/rlm-mcp-server")
    fake_cgroup(server.parent, {"cgroup.subtree_control": "memory pids", "cgroup.procs": ""})
    before = {path: path.read_text() for path in tmp_path.rglob("*") if path.is_file()}
    support = cgroups.cgroup_support(str(root), str(proc))
    assert support.delegated and support.parent == str(server.parent) and not support.server_leaf
    assert support.prepare() == str(server.parent)
    assert {path: path.read_text() for path in tmp_path.rglob("*") if path.is_file()} == before
    (server.parent / "cgroup.subtree_control").write_text("pids")
    assert not cgroups.cgroup_support(str(root), str(proc)).delegated


def test_a_worker_cgroup_gets_its_limits_and_pids_and_goes_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = fake_cgroup(tmp_path / "delegated", {"cgroup.subtree_control": "memory pids"})
    # cgroupfs makes memory.swap.max on mkdir where swap is accounted; here it is made beforehand
    fake_cgroup(parent / "rlm-mcp-worker-a", {"memory.swap.max": "max", "cgroup.kill": ""})
    worker = cgroups.WorkerCgroup.create(str(parent), memory_bytes=4096 << 20, pids_max=64, name="a")
    path = parent / "rlm-mcp-worker-a"
    assert worker.path == str(path)
    assert (path / "memory.max").read_text() == str((4096 << 20) + cgroups.MEMORY_HEADROOM_BYTES)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "64"
    worker.add(1234)
    assert (path / "cgroup.procs").read_text() == "1234"

    plain_rmdir = os.rmdir

    def cgroupfs_rmdir(target: str) -> None:
        """cgroupfs: busy while a process is inside; once empty, the directory goes with its files."""
        if Path(target, "cgroup.procs").read_text() and Path(target, "cgroup.kill").read_text() != "1":
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), target)
        for child in Path(target).iterdir():
            child.unlink()
        plain_rmdir(target)

    monkeypatch.setattr(cgroups.os, "rmdir", cgroupfs_rmdir)
    assert worker.remove() and not path.exists()  # the leftover process was killed through cgroup.kill

    other = cgroups.WorkerCgroup.create(str(parent), memory_bytes=1 << 30)
    assert Path(other.path).name.startswith(f"rlm-mcp-worker-{os.getpid()}-")
    assert not Path(other.path, "memory.swap.max").exists()  # not written where swap is not accounted
    assert other.remove()


def test_the_doctor_finds_a_worker_cgroup_from_proc(tmp_path: Path) -> None:
    root = fake_cgroup(tmp_path / "cgroup", {})
    fake_cgroup(root / "d" / "rlm-mcp-worker-7-1", {"memory.max": str(2048 << 20), "pids.max": "512"})
    proc = tmp_path / "proc"
    fake_cgroup(proc / "7", {"cgroup": "0::/d/rlm-mcp-worker-7-1\n"})
    fake_cgroup(proc / "8", {"cgroup": "0::/d/rlm-mcp-server\n"})
    found = cgroups.worker_cgroups([7, 8, 9], str(root), str(proc))
    assert found == [f"{root}/d/rlm-mcp-worker-7-1 (memory.max 2,048 MiB, pids.max 512)"]


# -- the doctor --------------------------------------------------------------------------------------------


def test_the_doctor_names_the_memory_mechanism(tmp_path: Path, data_dir: Path) -> None:
    done = run_doctor(tmp_path, data_dir)
    lines = [line for line in done.stdout.splitlines() if line.startswith("memory: ")]
    assert len(lines) == 1, done.stdout
    line = lines[0]
    assert line.startswith("memory: RLIMIT_DATA 4,096 MiB"), line
    support = cgroups.cgroup_support()
    if not support.delegated:
        assert f"cgroup v2 not delegated here: {support.reason}" in line
        mechanism = "refused by seccomp" if MISSING["processes"] is None else "NOT capped"
        assert f"shared anonymous memory {mechanism}" in line


def test_the_memory_line_for_each_situation(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir, memory_limit_mb=2048)

    def layers(limits: bool, seccomp_holds: bool) -> list[dict[str, object]]:
        return [
            {"name": "limits", "active": limits, "detail": "memory 2,048 MiB" if limits else "RLM_MCP_SANDBOX=off"},
            {"name": "processes", "active": seccomp_holds, "detail": "seccomp: no table"},
        ]

    assert memory_line(settings, layers(False, False), []) == "memory: not capped (RLM_MCP_SANDBOX=off)"
    in_cgroup = memory_line(
        settings, layers(True, True), ["/sys/fs/cgroup/d/rlm-mcp-worker-1-1 (memory.max 2,048 MiB)"]
    )
    assert in_cgroup.startswith("memory: RLIMIT_DATA 2,048 MiB; cgroup /sys/fs/cgroup/d/rlm-mcp-worker-1-1")
    assert "shared anonymous memory refused by seccomp" in memory_line(settings, layers(True, True), [])
    assert "shared anonymous memory is NOT capped" in memory_line(settings, layers(True, False), [])


async def test_each_worker_goes_into_a_cgroup_of_its_own_where_one_is_delegated(tmp_path: Path, data_dir: Path) -> None:
    # Regular files stand in for a delegated cgroup v2 parent: nothing real is created (cgroup v1 here).
    from rlm_mcp.host.factory import session_worker_host

    parent = tmp_path / "fake-cgroup"
    parent.mkdir()
    settings = make_settings(tmp_path, data_dir)
    host = session_worker_host(settings, settings.workspace / "sessions" / "cgroupedsession")
    host.cgroup_parent = str(parent)
    await host.start()
    try:
        (own,) = parent.glob("rlm-mcp-worker-*")
        expected = settings.memory_limit_mb * 2**20 + cgroups.MEMORY_HEADROOM_BYTES
        assert int((own / "memory.max").read_text()) == expected
        assert int((own / "pids.max").read_text()) == cgroups.DEFAULT_PIDS_MAX
        moved = int((own / "cgroup.procs").read_text())  # each write moves one process; the last one stays
        assert host._process is not None and moved in {host._process.pid, *descendants(host._process.pid)}
    finally:
        await host.close()
    assert host._cgroup is None  # given back once the worker is dead
