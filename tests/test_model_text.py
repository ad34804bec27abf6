"""The text a model reads on the surfaces issue 26 hardened: each message one true line that says what to do.

A helper played a model on these surfaces and found results that misled it or cost it: tracebacks through
the REPL's own helpers, memory answers that said nothing, internal keys instead of the cap that was hit, a
`del` answered as if it were an overwrite, a size over the cap that read as equal to it. Each test here runs
the real server through the real MCP client and checks the words the model is given. (The Ray map messages
are in tests/test_cluster.py, next to the cluster they need.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, run, text_of, value_of
from tests.test_sandbox import needs

pytestmark = pytest.mark.anyio

MiB = 1 << 20
INTERNALS = re.compile(r"rlm_mcp[./]|File \"/")  # a module path, or a frame of a file of ours


def connect(tmp_path: Path, data_dir: Path, **overrides: Any) -> Client:
    overrides.setdefault("distill", "off")
    return Client(build_server(make_settings(tmp_path, data_dir, **overrides)))


async def error_text(client: Client, code: str) -> str:
    result = await run(client, code)
    assert result.structured_content is not None and result.structured_content["outcome"] == "error", text_of(result)
    return text_of(result)


# -- 1. errors raised inside the REPL's own helpers -----------------------------------------------------------


async def test_an_error_inside_the_repls_own_helpers_shows_only_the_cells_frames(
    web: tuple[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """rlm_map, llm_map, remember and the other helpers raise from code the model cannot change: the
    traceback ends at the cell's line, and the error's type is its bare name (MapError, not a module path)."""
    base, _ = web
    (data_dir / "app.log").write_text("ERROR x\n" * 10)
    function = "def f(text, path):\n    return 1\n"
    async with connect(tmp_path, data_dir, allow_url=[base + "logs/"], ray_address="127.0.0.1:9") as client:
        await load(client, path=str(data_dir / "app.log"), name="log")
        assert (await run(client, function + "s = 'abc'")).structured_content["outcome"] == "ok"
        outside = await error_text(client, "rlm_map(f, 'http://127.0.0.1:9/elsewhere/x.log')")
        assert "\nMapError: " in outside, outside
        llm = await error_text(client, "llm_map('{text}', 'http://127.0.0.1:9/elsewhere/x.log')")
        assert "\nMapError: " in llm, llm
        named = await error_text(client, "remember('x', about=s)")
        assert "\nMemoryUnavailableError: no loaded context 'abc'" in named, named
        missing = await error_text(client, "remember('x', about='nothere')")
        chunked = await error_text(client, "chunk(log, -1)")
        for said in (outside, llm, named, missing, chunked):
            assert not INTERNALS.search(said), said
            assert said.count('  File "') == 1, said  # the cell's own line, nothing of ours below it


# -- 2. remember() and recall() -------------------------------------------------------------------------------


async def test_remember_takes_the_context_itself_and_recall_shows_the_sessions_own_proposals(
    tmp_path: Path, data_dir: Path
) -> None:
    (data_dir / "app.log").write_text("INFO ok\nERROR db down\n" * 50)
    async with connect(tmp_path, data_dir) as client:
        await load(client, path=str(data_dir / "app.log"), name="log")
        await load(client, text="a small note", name="note")
        said = await value_of(client, "remember('timestamps are UTC', about=log)")
        assert "remembered about 'log'" in said, said
        assert "the user approves it with rlm-mcp handbook review" in said, said
        wrong = await error_text(client, "remember('x', about=['not', 'a', 'context'])")
        assert wrong.splitlines()[-2] == "ValueError: about= takes the context's name, e.g. about='log'", wrong
        recalled = await value_of(client, "recall(log)")
        assert 'proposal of this session, awaiting approval: "timestamps are UTC"' in recalled, recalled
        assert await value_of(client, "recall('note')") == "[]"  # only what was filed about that content


async def test_a_load_offers_recall_only_when_findings_were_cut_or_left_out(tmp_path: Path, data_dir: Path) -> None:
    log = data_dir / "app.log"
    log.write_text("INFO ok\nERROR db down\n" * 50)
    async with connect(tmp_path, data_dir, memory_auto_approve=True) as client:
        await load(client, path=str(log), name="log")
        await value_of(client, "remember('the db module fails')")
    async with connect(tmp_path, data_dir) as client:
        shown = text_of(await load(client, path=str(log), name="log"))
        assert "the db module fails" in shown and "recall()" not in shown, shown  # all of it is shown
    async with connect(tmp_path, data_dir, memory_auto_approve=True) as client:
        await load(client, path=str(log), name="log")
        await value_of(client, "remember('the errors come in bursts: ' + 'x' * 300)")
    async with connect(tmp_path, data_dir) as client:
        shown = text_of(await load(client, path=str(log), name="log"))
        assert "  more: recall()" in shown, shown  # the long one was cut


# -- 4. URL loads ---------------------------------------------------------------------------------------------


async def test_a_url_load_names_the_cap_it_hit_and_the_files_it_left_out(
    web: tuple[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    for day in range(1, 6):
        (served / "logs" / f"day{day}.log").write_text(("x" * 99 + "\n") * 3_000)  # 300,000 bytes each
    async with connect(tmp_path, data_dir, allow_url=[base], fetch_max_mb=1, fetch_total_mb=1) as client:
        tree = text_of(await load(client, path=base + "logs/", name="t"))
        assert "\n2 files not fetched (over --fetch-max-mb, 1 MiB per load): day4.log, day5.log\n" in tree, tree
        refused = text_of(await load(client, path=base + "logs/day1.log", name="one"))
        assert "is 300,000 bytes; 900,000 of the 1,048,576 bytes this session may hold" in refused, refused
        assert "held by: t; unload('t') first" in refused, refused
        assert await value_of(client, "unload('t')") == "\"unloaded 't'; freed 900,000 bytes of fetched data\""
        assert not (await load(client, path=base + "logs/day1.log", name="one")).is_error
        tree = text_of(await load(client, path=base + "logs/", name="t"))  # day1's copy takes its room
        said = "3 files not fetched (over --fetch-total-mb, 1 MiB this session may hold): day3.log, day4.log, day5"
        assert said in tree, tree


# -- 5. del of a loaded context -------------------------------------------------------------------------------


async def test_del_of_a_loaded_context_says_that_unload_frees_it(tmp_path: Path, data_dir: Path) -> None:
    async with connect(tmp_path, data_dir) as client:
        await load(client, text="the original", name="t")
        shown = text_of(await run(client, "del t"))
        assert "t is a loaded context: del does not free it; unload('t') does" in shown, shown
        assert "overwritten" not in shown, shown
        rebound = text_of(await run(client, "t = 5"))  # an overwrite is still said as one
        assert "Restored REPL-provided names you had overwritten: t" in rebound, rebound


# -- 6. the disk cap ------------------------------------------------------------------------------------------


async def test_over_the_disk_cap_never_reads_as_equal_and_names_the_descriptors_to_close(
    tmp_path: Path, data_dir: Path
) -> None:
    async with connect(tmp_path, data_dir, disk_limit_mb=2) as client:
        code = (
            "import os\nnamed = open('named.bin', 'wb'); os.posix_fallocate(named.fileno(), 0, 600 << 10)\n"
            "held = open('held.bin', 'wb'); os.posix_fallocate(held.fileno(), 0, 1536 << 10); os.remove('held.bin')\n"
            "held.fileno()"
        )
        result = await run(client, code)
        shown = text_of(result)
        over = re.search(r"holds 2\.[1-9] MiB, over this session's cap of 2 MiB \(RLM_MCP_DISK_LIMIT_MB\)", shown)
        assert over, shown
        descriptor = result.structured_content["result"]
        assert f"1.5 MiB of it in files open without a name: fd {descriptor}; close them;" in shown, shown


async def test_the_file_size_error_names_the_setting_that_set_the_limit(tmp_path: Path, data_dir: Path) -> None:
    needs("limits")
    async with connect(tmp_path, data_dir, disk_limit_mb=2) as client:
        error = await error_text(client, "open('big.bin', 'wb').write(b'x' * (3 << 20))")
        assert "files are capped at 2 MiB (RLM_MCP_DISK_LIMIT_MB)" in error, error


# -- 7. a crash restore ---------------------------------------------------------------------------------------


async def test_a_crash_restore_lists_the_variables_it_restored(tmp_path: Path, data_dir: Path) -> None:
    async with connect(tmp_path, data_dir) as client:
        assert await value_of(client, "kept = 41; kept + 1") == "42"
        result = await run(client, "import os\nos._exit(3)")
        data = result.structured_content
        assert data is not None and data["state"] == "restored" and data["restored"] == ["kept"], data
        assert "overwritten" not in text_of(result), text_of(result)
        assert "variables restored from the last successful cell: kept" in text_of(result), text_of(result)
