"""load_context of URLs: fetched by the server under --allow-url, through fsspec, from a local HTTP server
and an S3-compatible server (moto's server mode), both on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from testkit.static_http import serving
from tests.conftest import load, make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio


def connect(tmp_path: Path, data_dir: Path, **overrides: Any) -> Client:
    return Client(build_server(make_settings(tmp_path, data_dir, **overrides)))


async def test_an_https_style_url_is_fetched_by_the_server_and_loaded_as_a_file(
    web: tuple[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    (served / "logs" / "app.log").write_text("INFO ok\nERROR disk full\n" * 1000)
    async with connect(tmp_path, data_dir, allow_url=[base + "logs/"]) as client:
        loaded = await load(client, path=base + "logs/app.log", name="logs")
        assert loaded.structured_content["source"] == base + "logs/app.log", text_of(loaded)
        assert loaded.structured_content["chars"] == 24_000
        assert await value_of(client, "grep('ERROR', logs, count=True)") == "1000"
        # The worker cannot reach the URL itself; the server fetched it into the session's fetched/.
        fetched = await value_of(client, "import urllib.request\ntry:\n urllib.request.urlopen(" + repr(base) + ")\n"
                                 "except Exception as e:\n r = type(e).__name__\nr")  # fmt: skip
        assert fetched in ("'URLError'", "'PermissionError'", "'OSError'")


async def test_a_directory_url_becomes_a_dict_and_members_are_decompressed(
    web: tuple[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    (served / "logs" / "a.log").write_text("alpha\n")
    (served / "logs" / "b.log.gz").write_bytes(gzip.compress(b"beta\n"))
    async with connect(tmp_path, data_dir, allow_url=[base]) as client:
        loaded = await load(client, path=base + "logs/", name="tree")
        assert loaded.structured_content["files"] == 2, text_of(loaded)
        assert await value_of(client, "sorted(tree.items())") == "[('a.log', 'alpha\\n'), ('b.log.gz', 'beta\\n')]"


async def test_urls_are_refused_outside_the_allowed_prefixes_and_the_session_goes_on(
    web: tuple[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    (served / "logs" / "app.log").write_text("x" * 3_000_000)
    async with connect(tmp_path, data_dir) as client:
        refused = await load(client, path=base + "logs/app.log")
        assert refused.is_error and "--allow-url PREFIX" in text_of(refused)
    async with connect(tmp_path, data_dir, allow_url=[base + "logs/"], fetch_max_mb=1) as client:
        outside = await load(client, path=base + "secret.txt")
        assert outside.is_error and "outside the allowed URL prefixes" in text_of(outside)
        climbing = await load(client, path=base + "logs/../secret.txt")
        assert climbing.is_error and "'..'" in text_of(climbing)
        big = await load(client, path=base + "logs/app.log")
        assert big.is_error and "over the 1,048,576 fetched for one load" in text_of(big)
        missing = await load(client, path=base + "logs/none.log")
        assert missing.is_error and "does not exist" in text_of(missing)
        assert await value_of(client, "1 + 1") == "2"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1, and a boto3 client for it; the server's s3fs finds it through the
    standard AWS variables, as it would a real endpoint."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="team-logs")
    try:
        yield client
    finally:
        server.stop()


async def test_an_s3_glob_is_fetched_with_the_servers_own_credentials(s3: Any, tmp_path: Path, data_dir: Path) -> None:
    for day in (1, 2, 3):
        body = gzip.compress(f"2026-12-0{day} ERROR day {day}\n".encode() * 10)
        s3.put_object(Bucket="team-logs", Key=f"logs/2026/12/0{day}/app.log.gz", Body=body)
    s3.put_object(Bucket="team-logs", Key="private/keys.txt", Body=b"not for the model")
    async with connect(tmp_path, data_dir, allow_url=["s3://team-logs/logs/"]) as client:
        loaded = await load(client, path="s3://team-logs/logs/**/*.gz", name="logs")
        assert loaded.structured_content["files"] == 3, text_of(loaded)
        assert await value_of(client, "sorted(logs)") == (
            "['2026/12/01/app.log.gz', '2026/12/02/app.log.gz', '2026/12/03/app.log.gz']"
        )
        assert await value_of(client, "grep('ERROR', logs, count=True)") == "30"
        denied = await load(client, path="s3://team-logs/private/keys.txt")
        assert denied.is_error and "outside the allowed URL prefixes" in text_of(denied)
        leaked = await run(client, "import os\nsorted(k for k in os.environ if k.startswith('AWS'))")
        assert leaked.structured_content["result"] == "[]"  # the credentials stay in the server


def test_a_url_is_allowed_only_at_or_below_a_prefix_segment_by_segment() -> None:
    from rlm_mcp.contexts.remote import check_allowed
    from rlm_mcp.errors import ContextError

    check_allowed("s3://logs/2026/a.gz", ("s3://logs",))
    check_allowed("https://HOST/data/x.csv", ("https://host/data/",))
    for url, why in [
        ("s3://logs-private/a.gz", "outside the allowed"),
        ("https://host/data-secret/x", "outside the allowed"),
        ("https://host.evil.example/data/x", "outside the allowed"),
        ("https://host@evil.example/data/x", "credentials"),
        ("https://host/data/%2E%2E/secret", "an encoded '.'"),
        ("https://host/data/../secret", "'..'"),
        ("https://host/data/x?token=1", "a query"),
    ]:
        with pytest.raises(ContextError, match=why):
            check_allowed(url, ("s3://logs", "https://host/data"))


async def test_a_redirect_is_not_followed_out_of_the_prefix(tmp_path: Path, data_dir: Path) -> None:
    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        async with connect(tmp_path, data_dir, allow_url=[base]) as client:
            refused = await load(client, path=base + "data.txt")
            assert refused.is_error, text_of(refused)
    finally:
        server.shutdown()
        server.server_close()


# -- issue 26 section 3: every request checked as it is sent; one copy per URL, capped and freed ----------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A static server recording every request target: (base URL, its directory, the targets). Under
    data/ (the allowed prefix in these tests) a file; beside it, what must never be requested."""
    served = tmp_path / "site"
    for name, text in {"data/ok.txt": "fine\n", "data/deeper/d.txt": "deep\n", "secret.txt": "SECRET\n",
                       "secretdir/s.txt": "SECRET2\n", "data-private/p.txt": "SECRET3\n"}.items():  # fmt: skip
        (served / name).parent.mkdir(parents=True, exist_ok=True)
        (served / name).write_text(text)
    requested: list[str] = []
    with serving(served, requested) as base:
        yield base, served, requested


def outside(requested: list[str]) -> list[str]:
    """The request targets that left data/ (the server itself drops '..' segments, so they count too)."""
    return [target for target in requested if not target.startswith("/data/") or ".." in target or "%2" in target]


TRICKS = ["data/.\t./secret.txt", "data/.\r./secretdir/", "data/.\n./secret.txt", "data/.\t./missing.txt",
          "data/.\t./secretdir/*.txt", "data/%2e%2e/secret.txt", "data/%09/../secret.txt", "data/..;/secret.txt",
          "data/.;/..;x=1/secretdir/"]  # fmt: skip


async def test_tab_cr_and_lf_dot_dot_urls_are_refused_before_anything_is_requested(
    site: tuple[str, Path, list[str]], tmp_path: Path, data_dir: Path
) -> None:
    base, _, requested = site
    async with connect(tmp_path, data_dir, allow_url=[base + "data/"]) as client:
        answers = [await load(client, path=base + trick, name="x") for trick in TRICKS]
        assert requested == []
        assert all(answer.is_error for answer in answers), [text_of(answer) for answer in answers]
        texts = [
            text_of(answer).replace(repr(base + trick), "URL") for answer, trick in zip(answers, TRICKS, strict=True)
        ]
        # The same answer whether the path outside exists (secret.txt) or not (missing.txt).
        assert texts[0] == texts[3] and "does not exist" not in " ".join(texts), texts
        assert "whitespace or a control character" in texts[0]
        assert await value_of(client, "1 + 1") == "2"


async def test_an_index_pages_links_out_of_the_prefix_are_never_requested(
    site: tuple[str, Path, list[str]], tmp_path: Path, data_dir: Path
) -> None:
    base, served, requested = site
    other: list[str] = []
    with serving(served, other) as other_host:
        links = ["ok.txt", "deeper/", "../secret.txt", "../secretdir/", "sub/../../secretdir/", "/secretdir/",
                 "%2e%2e/secretdir/", ".\t./secretdir/", "../data-private/", other_host + "secretdir/",
                 other_host + "data/ok.txt", "//evil.invalid/x/"]  # fmt: skip
        page = "".join(f'<a href="{link}">x</a>\n' for link in links) + f"see {base}data/../secretdir/ too\n"
        (served / "data" / "index.html").write_text(f"<html><body>{page}</body></html>")
        async with connect(tmp_path, data_dir, allow_url=[base + "data/"]) as client:
            loaded = await load(client, path=base + "data/", name="tree")
            assert outside(requested) == [] and other == [], (requested, other)
            assert (
                await value_of(client, "sorted(tree.items())") == "[('deeper/d.txt', 'deep\\n'), ('ok.txt', 'fine\\n')]"
            )
            assert "links not fetched (outside --allow-url)" in text_of(loaded), text_of(loaded)
            globbed = await load(client, path=base + "data/**/*.txt", name="tree")
            assert globbed.structured_content["files"] == 2, text_of(globbed)
    assert outside(requested) == [] and other == [], (requested, other)


async def test_a_redirect_out_of_the_prefix_is_refused_before_it_is_followed(tmp_path: Path, data_dir: Path) -> None:
    from rlm_mcp.cluster.pieces import read_text
    from rlm_mcp.errors import MapFailure

    served = tmp_path / "site"
    (served / "data").mkdir(parents=True)
    (served / "secret.txt").write_text("SECRET\n")
    requested: list[str] = []
    redirects = {"/data/a.txt": "/secret.txt", "/data/b.txt": "/data/.\t./secret.txt", "/data/c/": "/secretdir/",
                 "/data/d.txt": "/data/%2E%2E/secret.txt", "/data/e.txt": "../secret.txt"}  # fmt: skip
    with serving(served, requested, redirects) as base:
        async with connect(tmp_path, data_dir, allow_url=[base + "data/"]) as client:
            answers = [await load(client, path=base + target[1:], name="x") for target in redirects]
        # A map's task reads the object on a cluster node, with the cluster's credentials: it follows no redirect.
        with pytest.raises(MapFailure, match="follows no redirect"):
            read_text(base + "data/a.txt", 1000)
    assert outside(requested) == [], requested
    for answer in answers:
        assert answer.is_error and "redirects outside the allowed URLs" in text_of(answer), text_of(answer)


async def test_a_map_source_takes_the_same_checks(site: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    from rlm_mcp.cluster.maps import list_source
    from rlm_mcp.errors import ContextError

    base, served, requested = site
    settings = make_settings(tmp_path, served, allow_url=[base + "data/"])
    for trick in TRICKS:
        with pytest.raises(ContextError):
            list_source(base + trick, settings)
    assert requested == []
    (served / "data" / "index.html").write_text(
        '<a href="ok.txt">o</a> <a href="sub/../../secretdir/">s</a> <a href="../secretdir/">p</a> '
        f'<a href="%2e%2e/secretdir/">e</a> see {base}data/../secretdir/'
    )
    assert list_source(base.upper() + "/data/", settings) == [base + "data/ok.txt"]
    assert list_source(base + "data//ok.txt", settings) == [base + "data/ok.txt"]
    assert outside(requested) == [], requested


def fetched_copies(tmp_path: Path) -> list[str]:
    """The entries of every session's fetched/ directory under the test's workspace."""
    return sorted(entry.name for fetched in (tmp_path / "workspace").rglob("fetched") for entry in fetched.iterdir())


async def test_every_spelling_of_a_url_shares_one_copy(web: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    base, served = web
    (served / "logs" / "app.log").write_text("one copy\n")
    port = base.split(":")[2].rstrip("/")
    spellings = [base + "logs/app.log", f"HTTP://127.0.0.1:{port}/logs/app.log", base + "/logs//app.log",
                 base + "logs/%61pp.log"]  # fmt: skip
    async with connect(tmp_path, data_dir, allow_url=[base]) as client:
        loads = [await load(client, path=spelling, name=f"c{index}") for index, spelling in enumerate(spellings)]
        assert len(fetched_copies(tmp_path)) == 1, fetched_copies(tmp_path)
        for loaded in loads:
            assert not loaded.is_error and loaded.structured_content["source"] == base + "logs/app.log", text_of(loaded)


async def test_fetched_copies_are_capped_in_total(web: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    base, served = web
    for name in ("a", "b"):
        (served / "logs" / f"{name}.log").write_text(name * 600_000)
    (served / "logs" / "small.log").write_text("s")
    async with connect(tmp_path, data_dir, allow_url=[base], fetch_total_mb=1) as client:
        assert not (await load(client, path=base + "logs/a.log", name="a")).is_error
        over = await load(client, path=base + "logs/b.log", name="b")
        assert over.is_error and "--fetch-total-mb" in text_of(over), text_of(over)
        tree = await load(client, path=base + "logs/", name="tree")  # a's copy counts: only small.log fits
        assert tree.structured_content["files"] == 1, text_of(tree)
        assert "files not fetched (over --fetch-total-mb" in text_of(tree), text_of(tree)
        await value_of(client, "unload('tree')")
        await value_of(client, "unload('a')")
        assert not (await load(client, path=base + "logs/b.log", name="b")).is_error


async def test_a_copy_is_freed_when_no_context_uses_it(web: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    base, served = web
    for name in ("a", "b", "c"):
        (served / "logs" / f"{name}.log").write_text(name * 100_000)
    async with connect(tmp_path, data_dir, allow_url=[base]) as client:
        assert not (await load(client, path=base + "logs/a.log", name="a")).is_error
        assert not (await load(client, path=base + "logs/a.log", name="also_a")).is_error
        assert len(fetched_copies(tmp_path)) == 1
        await value_of(client, "unload('a')")
        assert len(fetched_copies(tmp_path)) == 1  # also_a still uses it
        await value_of(client, "unload('also_a')")
        assert fetched_copies(tmp_path) == []
        assert not (await load(client, path=base + "logs/b.log", name="b")).is_error
        assert not (await load(client, path=base + "logs/c.log", name="b")).is_error  # replaces b's copy
        assert len(fetched_copies(tmp_path)) == 1
        assert await value_of(client, "b[:3]") == "'ccc'"
        refused = await load(client, path=base + "logs/none.log", name="gone")  # a failed load keeps no copy
        assert refused.is_error and len(fetched_copies(tmp_path)) == 1
    assert fetched_copies(tmp_path) == []  # the session closed


def test_a_url_is_checked_in_the_spelling_it_is_sent_in() -> None:
    from rlm_mcp.contexts.remote import check_allowed
    from rlm_mcp.errors import ContextError

    prefixes = ("https://host/data/", "s3://logs")
    assert check_allowed("HTTPS://Host:443//data/%78.csv", prefixes) == "https://host/data/x.csv"
    assert check_allowed("https://host/data/caf\u00e9 2.csv".replace(" ", "%20"), prefixes) == (
        "https://host/data/caf%C3%A9%202.csv"
    )
    assert check_allowed("s3://logs//2026/a.gz", prefixes) == "s3://logs/2026/a.gz"
    for url in ["https://host/data/.\t./x", "https://host/data/x\n", "https://host/data/a b", "https://host/data/%00x",
                "https://host/data/%0a/x", "https://host/data/%zz", "https://h\u00f6st/data/x",
                "https://host/data/\u200bx", "https://host/data/%2e%2E/x", "https://host:80@evil/data/x",
                "https://host/data/%5c..%5csecret"]:  # fmt: skip
        with pytest.raises(ContextError):
            check_allowed(url, prefixes)


def test_a_dot_dot_segment_with_path_parameters_is_refused() -> None:
    """A servlet container (Tomcat, Jetty) drops a segment's ';parameters' before it resolves dots, so
    data/..;/secret.txt is secret.txt there; Windows servers trim a segment's trailing dots and spaces."""
    from rlm_mcp.contexts.remote import check_allowed
    from rlm_mcp.errors import ContextError

    prefixes = ("http://h/data/",)
    for url in ["http://h/data/..;/secret.txt", "http://h/data/..;x=1/secret.txt", "http://h/data/.;/..;/secret.txt",
                "http://h/data/a/..%3B/../secret.txt", "http://h/data/.../secret.txt", "http://h/data/..%20/secret.txt",
                "http://h/data/%2e%2e;/secret.txt"]:  # fmt: skip
        with pytest.raises(ContextError, match=r"'\.\.'|an encoded '\.'"):
            check_allowed(url, prefixes)
    for url in ["http://h/data/a;v=1/b.txt", "http://h/data/.hidden;x", "http://h/data/..a;/b", "http://h/data/;x/b"]:
        assert check_allowed(url, prefixes) == url  # a ';' elsewhere is a name's (an S3 key may hold one)


def index_pages(served: Path, pages: int, links: int) -> None:
    """data/ok.txt, and data/dNNN/ pages each holding `links` unique links to files no glob here wants."""
    (served / "data").mkdir(parents=True)
    (served / "data" / "ok.txt").write_text("fine\n")
    top = "".join(f'<a href="d{page:03d}/">d</a>\n' for page in range(pages))
    (served / "data" / "index.html").write_text(f'<a href="ok.txt">ok</a>\n{top}')
    for page in range(pages):
        (served / "data" / f"d{page:03d}").mkdir()
        body = "".join(f'<a href="p{page}_{link:06d}.dat">x</a>\n' for link in range(links))
        (served / "data" / f"d{page:03d}" / "index.html").write_text(body)


async def test_a_crawl_of_hostile_index_pages_stops_at_its_bytes_links_and_time(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index pages are no fetched data, yet a server can make them many, large, dense and slow: the pages one
    listing reads count against a budget of bytes (at most the load's --fetch-max-mb), of links and of time,
    and the listing fails in one line that says what to narrow; the files it keeps are bounded by
    --dir-max-files (the rest counted), the directories it queues by the pages it may read."""
    from rlm_mcp.contexts import remote

    served = tmp_path / "site"
    index_pages(served, pages=60, links=4_000)  # 60 pages of about 120 KB: 7 MB of links
    requested: list[str] = []
    with serving(served, requested) as base:
        async with connect(tmp_path, data_dir, allow_url=[base + "data/"], fetch_max_mb=1) as client:
            over = await load(client, path=base + "data/**/*.txt", name="tree")
            said = text_of(over)
            assert over.is_error and "passed 1,048,576 bytes in all; narrow the URL or glob" in said, said
            assert len(requested) <= 12, requested  # 1 MiB is about 9 pages, not 60
            with monkeypatch.context() as patched:
                patched.setattr(remote, "CRAWL_DEADLINE_S", 0.0)
                late = await load(client, path=base + "data/**/*.txt", name="tree")
                assert late.is_error and "took over 0 s; narrow the URL or glob" in text_of(late), text_of(late)
            requested.clear()
            with monkeypatch.context() as patched:
                patched.setattr(remote, "MAX_CRAWL_LINKS", 5_000)
                dense = await load(client, path=base + "data/**/*.txt", name="tree")
                assert dense.is_error and "hold over 5,000 links; narrow" in text_of(dense), text_of(dense)
                assert len(requested) == 3, requested  # the top page, then two of 4,000 links
        (served / "data" / "many").mkdir()  # a page of many matching links: the listing keeps what a load takes
        (served / "data" / "many" / "index.html").write_text("".join(f'<a href="f{n}.txt">f</a>' for n in range(500)))
        with remote._store(base) as (_, http):
            listing = remote._crawl(http, base + "data/many/", "**", (base + "data/",), 10)
        assert len(listing.objects) == 11 and listing.skipped == {"over_files": 489}, listing.skipped
