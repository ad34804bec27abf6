"""load_context through the real MCP client: files, trees, globs, inline text, and every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, text_of, value_of

pytestmark = pytest.mark.anyio


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


async def test_a_file_loads_as_str_and_only_metadata_comes_back(client: Client, data_dir: Path) -> None:
    body = "header line\n" + "filler text\n" * 2_000 + "SECRET-MARKER-7781\n"
    write(data_dir / "notes.txt", body)
    result = await load(client, path="notes.txt")
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data is not None
    assert data["name"] == "context" and data["kind"] == "str"
    assert data["chars"] == len(body) and data["lines"] == body.count("\n") and data["bytes"] == len(body)
    assert data["est_tokens"] == len(body) // 4
    assert data["preview"].startswith("header line")
    assert "SECRET-MARKER-7781" not in text_of(result)  # by reference: the content is never sent back
    assert await value_of(client, "context.find('SECRET-MARKER-7781')") == str(body.find("SECRET-MARKER-7781"))


async def test_undecodable_bytes_are_replaced_and_reported(client: Client, data_dir: Path) -> None:
    write(data_dir / "latin1.txt", b"caf\xe9 au lait\n\xff\xfe end\n")
    result = await load(client, path="latin1.txt", name="doc")
    data = result.structured_content
    assert data is not None and data["replaced_chars"] == 3
    assert "U+FFFD" in text_of(result)
    assert await value_of(client, "doc.count('\\ufffd')") == "3"


async def test_inline_text_loads_under_the_given_name(client: Client) -> None:
    result = await load(client, text="alpha\nbeta\n", name="small")
    data = result.structured_content
    assert data is not None and data["source"] == "inline text" and data["lines"] == 2
    assert await value_of(client, "small.split()") == "['alpha', 'beta']"


async def test_a_directory_honours_gitignore_and_skips_binaries(client: Client, data_dir: Path) -> None:
    repo = data_dir / "repo"
    (repo / ".git").mkdir(parents=True)
    write(repo / ".git" / "config", "[core]\n")
    write(repo / ".gitignore", "*.log\nbuild/\n!keep.log\n")
    write(repo / "README.md", "# demo\n")
    write(repo / "src" / "app.py", "print('app')\n")
    write(repo / "src" / "debug.log", "noise\n")
    write(repo / "keep.log", "kept despite *.log\n")
    write(repo / "build" / "out.txt", "generated\n")
    write(repo / "src" / "vendor" / ".gitignore", "*.tmp\n")
    write(repo / "src" / "vendor" / "lib.py", "x = 1\n")
    write(repo / "src" / "vendor" / "scratch.tmp", "tmp\n")
    write(repo / "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

    result = await load(client, path="repo", name="code")
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data is not None and data["kind"] == "files"
    expected = [".gitignore", "README.md", "keep.log", "src/app.py", "src/vendor/.gitignore", "src/vendor/lib.py"]
    assert data["files"] == len(expected)
    assert await value_of(client, "sorted(code)") == repr(expected)
    assert await value_of(client, "code['src/app.py']") == repr("print('app')\n")
    assert data["skipped"]["gitignored"] == 3  # build/, src/debug.log, src/vendor/scratch.tmp
    assert data["skipped"]["binary"] == 1 and data["skipped_examples"]["binary"] == ["logo.png"]
    assert "Skipped:" in text_of(result) and "logo.png" in text_of(result)


async def test_a_subdirectory_inherits_the_repository_gitignore(client: Client, data_dir: Path) -> None:
    repo = data_dir / "repo"
    (repo / ".git").mkdir(parents=True)
    write(repo / ".gitignore", "*.secret\n")
    write(repo / "pkg" / "a.py", "a = 1\n")
    write(repo / "pkg" / "b.secret", "hidden\n")
    result = await load(client, path="repo/pkg", name="pkg")
    assert await value_of(client, "sorted(pkg)") == "['a.py']"
    assert result.structured_content is not None and result.structured_content["skipped"] == {"gitignored": 1}


async def test_a_glob_selects_matching_files_at_any_depth(client: Client, data_dir: Path) -> None:
    write(data_dir / "src" / "a.py", "a\n")
    write(data_dir / "src" / "deep" / "er" / "b.py", "b\n")
    write(data_dir / "src" / "c.txt", "c\n")
    write(data_dir / "top.py", "top\n")
    await load(client, path="src/**/*.py", name="py")
    assert await value_of(client, "sorted(py)") == "['a.py', 'deep/er/b.py']"
    await load(client, path="*.py", name="toplevel")
    assert await value_of(client, "sorted(toplevel)") == "['top.py']"


async def test_directory_caps_stop_loading_and_say_what_was_left(tmp_path: Path, data_dir: Path) -> None:
    for i in range(12):
        write(data_dir / "many" / f"f{i:02}.txt", f"file {i}\n" * 10)
    write(data_dir / "many" / "big.txt", "x" * 5_000)
    settings = make_settings(tmp_path, data_dir, dir_max_files=5, dir_max_file_bytes=1_000)
    async with Client(build_server(settings)) as client:
        result = await load(client, path="many")
        data = result.structured_content
        assert data is not None and data["files"] == 5
        assert data["skipped"] == {"too_large": 1, "over_file_cap": 7}
        assert await value_of(client, "sorted(context)[:2]") == "['f00.txt', 'f01.txt']"

    settings = make_settings(tmp_path, data_dir, dir_max_bytes=300)
    async with Client(build_server(settings)) as client:
        result = await load(client, path="many")
        data = result.structured_content
        assert data is not None and data["bytes"] <= 300 and data["skipped"]["over_byte_cap"] > 0


async def test_symlinks_inside_a_tree_never_leave_the_roots(client: Client, data_dir: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "private" / "secret.txt", "top secret\n")
    write(data_dir / "tree" / "ok.txt", "fine\n")
    os.symlink(outside, data_dir / "tree" / "link.txt")
    os.symlink(outside.parent, data_dir / "tree" / "linkdir")
    result = await load(client, path="tree")
    data = result.structured_content
    assert data is not None
    assert await value_of(client, "sorted(context)") == "['ok.txt']"
    assert data["skipped"] == {"outside_roots": 1, "symlinked_dir": 1}


async def test_reloading_a_name_replaces_it_and_says_so(client: Client, data_dir: Path) -> None:
    write(data_dir / "one.txt", "one\n")
    write(data_dir / "two.txt", "two two\n")
    await load(client, path="one.txt")
    result = await load(client, path="two.txt")
    assert "replaced the earlier context 'context'" in text_of(result)
    assert await value_of(client, "context") == repr("two two\n")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"path": "missing.txt"}, "does not exist"),
        ({"path": "../outside.txt"}, "outside the allowed roots"),
        ({"path": "/etc/hostname"}, "outside the allowed roots"),
        ({"path": "sub/../../outside.txt"}, "outside the allowed roots"),
        ({"path": "escape-link"}, "outside the allowed roots"),
        ({"path": "devnull-link"}, "outside the allowed roots"),
        ({"path": "fifo"}, "FIFO"),
        ({"path": "nothing/**/*.rs"}, "no files match '**/*.rs'"),
        ({"path": "empty-dir"}, "is empty"),
        ({"path": "   "}, "`path` is empty"),
        ({"path": "ok.txt", "name": "1abc"}, "not a Python identifier"),
        ({"path": "ok.txt", "name": "class"}, "not a Python identifier"),
        ({"path": "ok.txt", "name": "_hidden"}, "reserves"),
        ({"path": "ok.txt", "name": "print"}, "builtin"),
        ({"path": "ok.txt", "text": "both"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"text": "x" * 101}, "limit for inline input"),
        ({"path": "big.txt"}, "--max-file-bytes"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_the_session_survives(
    tmp_path: Path, data_dir: Path, arguments: dict[str, str], message: str
) -> None:
    write(tmp_path / "outside.txt", "outside\n")
    write(data_dir / "ok.txt", "ok\n")
    write(data_dir / "big.txt", "b" * 2_000)
    (data_dir / "sub").mkdir()
    (data_dir / "nothing").mkdir()
    (data_dir / "empty-dir").mkdir()
    os.symlink(tmp_path / "outside.txt", data_dir / "escape-link")
    os.symlink("/dev/null", data_dir / "devnull-link")
    os.mkfifo(data_dir / "fifo")
    settings = make_settings(tmp_path, data_dir, inline_text_max_chars=100, max_file_bytes=1_000)
    async with Client(build_server(settings)) as client:
        await load(client, path="ok.txt", name="kept")
        await value_of(client, "marker = 41")
        result = await load(client, **arguments)
        assert result.is_error
        assert message in text_of(result)
        assert await value_of(client, "marker + 1") == "42"
        assert await value_of(client, "kept") == repr("ok\n")


async def test_a_tree_load_excludes_globs_and_summarises_the_tree(client: Client, data_dir: Path) -> None:
    for rel in ("src/app.py", "src/util.py", "src/vendor/big.min.js", "docs/guide.md", "README.md"):
        write(data_dir / "repo" / rel, f"content of {rel}\n")
    result = await load(client, path="repo", name="repo", exclude=["**/vendor/**", "*.md"])
    data = result.structured_content
    assert data is not None and data["files"] == 2, text_of(result)
    assert data["skipped"]["excluded"] == 3
    assert "by extension: .py 2; by top directory: src 2" in text_of(result)
    assert await value_of(client, "sorted(repo)") == "['src/app.py', 'src/util.py']"


async def test_compressed_members_of_a_directory_are_opened_as_single_files_are(client: Client, data_dir: Path) -> None:
    import bz2
    import gzip
    import lzma

    docs = data_dir / "doc"
    for package, opener, suffix in (("alpha", gzip.open, "gz"), ("beta", bz2.open, "bz2"), ("gamma", lzma.open, "xz")):
        (docs / package).mkdir(parents=True)
        with opener(docs / package / f"changelog.{suffix}", "wb") as handle:
            handle.write(f"{package} (1.0) stable; urgency=low\n".encode())
    (docs / "gamma" / "broken.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = await load(client, path="doc/*/changelog*", name="logs")
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data is not None and data["files"] == 3, text_of(result)
    assert await value_of(client, "sorted(v.split()[0] for v in logs.values())") == "['alpha', 'beta', 'gamma']"
    broken = await load(client, path="doc", name="everything")
    assert broken.structured_content["skipped"].get("unreadable") == 1, text_of(broken)  # type: ignore[index]
