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

from rlm_mcp.server import build_server
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
    from rlm_mcp.contexts.paths import ContextError
    from rlm_mcp.contexts.remote import check_allowed

    check_allowed("s3://logs/2026/a.gz", ("s3://logs",))
    check_allowed("https://HOST/data/x.csv", ("https://host/data/",))
    for url, why in [
        ("s3://logs-private/a.gz", "outside the allowed"),
        ("https://host/data-secret/x", "outside the allowed"),
        ("https://host.evil.example/data/x", "outside the allowed"),
        ("https://host@evil.example/data/x", "credentials or an encoded"),
        ("https://host/data/%2E%2E/secret", "credentials or an encoded"),
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
