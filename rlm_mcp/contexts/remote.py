"""Inputs that live elsewhere: a URL fetched by the server into the session's cache, then loaded as a file.

The worker has no network; the server fetches, through fsspec and the filesystem of the URL's scheme
(s3fs, gcsfs, adlfs, HTTP, the Hugging Face hub: optional extras), with that filesystem's own standard
credentials (environment, config files, instance roles), never anything the model passes. A URL is
fetched only under a prefix the operator allowed (--allow-url), as paths are read only under --root.
Fetched bytes are counted as they arrive and stop at the caps; names from a remote listing become paths
only after every segment is checked.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

from rlm_mcp import safefs
from rlm_mcp.contexts.paths import ContextError, has_glob
from rlm_mcp.units import MiB

SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "hf")
EXTRA_OF = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs",
            "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub"}  # fmt: skip
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
COPY_BYTES = 8 * MiB
MAX_LISTING_DEPTH = 32  # directories below a glob's fixed part: an HTTP index page's links are crawled
HTTP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Fetched:
    """What a load fetched: a file, or a directory of files; how many bytes; what was skipped."""

    local: Path
    is_tree: bool
    files: int
    bytes: int
    skipped: dict[str, int]


def scheme_of(text: str) -> str | None:
    """The URL scheme of `text` if it is a URL load_context fetches, else None (it is a path)."""
    match = _URL.match(text.strip())
    return match.group(1).lower() if match and match.group(1).lower() in SCHEMES else None


def check_allowed(url: str, prefixes: tuple[str, ...]) -> None:
    """Refuse a URL outside every allowed prefix, or one that could climb out of its prefix."""
    if not prefixes:
        raise ContextError(
            f"{url!r} is a URL, and this server fetches none; restart rlm-mcp with --allow-url PREFIX "
            "(RLM_MCP_ALLOW_URL), e.g. --allow-url s3://team-logs/, to allow URLs under it"
        )
    path = url.split("://", 1)[1]
    authority = path.split("/", 1)[0]
    if any(segment in ("..", ".") for segment in path.split("/")) or any(mark in url for mark in "?#\\"):
        raise ContextError(f"{url!r} holds '..', '.', a query or a fragment; give the plain URL of the data")
    if "@" in authority or "%2e" in url.lower() or "%2f" in url.lower() or "%5c" in url.lower():
        raise ContextError(f"{url!r} holds credentials or an encoded '.', '/' or '\\'; give the plain URL of the data")
    if not any(_under(url, prefix) for prefix in prefixes):
        raise ContextError(
            f"{url!r} is outside the allowed URL prefixes ({', '.join(prefixes)}); restart rlm-mcp with "
            "another --allow-url to allow it"
        )


def _under(url: str, prefix: str) -> bool:
    """`url` is `prefix` or below it, segment-wise: s3://logs does not allow s3://logs-private. The scheme and
    host compare without regard to case, the path exactly."""
    scheme, _, rest = prefix.partition("://")
    host, slash, path = rest.partition("/")
    url_scheme, _, url_rest = url.partition("://")
    url_host, url_slash, url_path = url_rest.partition("/")
    if (url_scheme.lower(), url_host.lower()) != (scheme.lower(), host.lower()):
        return False
    if not slash or not path:
        return True
    if not url_slash:
        return False
    return url_path == path.rstrip("/") or url_path.startswith(path if path.endswith("/") else path + "/")


def filesystem_for(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path in it, made afresh (no cached instance or listing)."""
    scheme = scheme_of(url) or ""
    try:
        import fsspec

        # A fresh filesystem each load, listing afresh: an object changed since must not load stale.
        options: dict[str, Any] = {"skip_instance_cache": True}
        if scheme in ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https"):
            options["use_listings_cache"] = False
        if scheme in ("http", "https"):  # a redirect would leave the allowed prefix (and could reach anywhere)
            options["allow_redirects"] = False
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise ContextError(
            f"loading {scheme}:// URLs needs `pip install 'rlm-mcp[remote]'` (fsspec and {EXTRA_OF.get(scheme, 'its')} "
            f"filesystem): {exc}"
        ) from None
    except (ValueError, OSError) as exc:
        raise ContextError(f"cannot open {url!r}: {exc}") from None


def fetch(
    url: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int, prefixes: tuple[str, ...] = ()
) -> Fetched:
    """Fetch the file, directory or glob at `url` into `destination`, replacing what an earlier load put
    there only once the new copy is whole (a load of the same URL, or a cell still reading the old copy, is
    never left with half of each). Blocking. `prefixes`: the allowed ones, which every listed object and
    every HTTP redirect must stay within."""
    building = destination.with_name(f"{destination.name}.part-{secrets.token_hex(6)}")
    try:
        fetched = _fetch_into(url, building, max_bytes, max_files, max_file_bytes, prefixes)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    old = destination.with_name(f"{destination.name}.old-{secrets.token_hex(6)}")
    if destination.exists():
        os.rename(destination, old)  # open files and maps of the old copy stay readable until closed
    os.rename(building, destination)
    shutil.rmtree(old, ignore_errors=True)
    return Fetched(destination / fetched.local.relative_to(building), fetched.is_tree, fetched.files, fetched.bytes,
                   fetched.skipped)  # fmt: skip


def _fetch_into(
    url: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int, prefixes: tuple[str, ...]
) -> Fetched:
    filesystem, path = filesystem_for(url)
    copy = _http_copier(prefixes) if scheme_of(url) in ("http", "https") else _copy
    if prefixes:
        copy = _checked(copy, scheme_of(url) or "", prefixes)
    safefs.private_dir(destination)
    try:
        if has_glob(path):
            return _fetch_tree(
                filesystem, path, _fixed_part(path), destination, max_bytes, max_files, max_file_bytes, copy
            )
        info = filesystem.info(path)
        if info.get("type") == "directory" or path.endswith("/"):  # over HTTP a directory is its index page
            pattern = path.rstrip("/") + "/**"
            return _fetch_tree(
                filesystem, pattern, path.rstrip("/"), destination, max_bytes, max_files, max_file_bytes, copy
            )
        size = int(info.get("size") or 0)
        if size > max_bytes:
            raise ContextError(f"{url!r} holds {size:,} bytes, over the {max_bytes:,} fetched for one load")
        name = _safe_name(PurePosixPath(path).name) or "data"
        got = copy(filesystem, path, destination / name, max_bytes)
        return Fetched(destination / name, False, 1, got, {})
    except FileNotFoundError:
        raise ContextError(f"{url!r} does not exist (or this server's credentials cannot see it)") from None
    except ContextError:
        raise
    except Exception as exc:  # each filesystem raises its own errors: say which, and what to check
        raise ContextError(f"fetching {url!r} failed: {type(exc).__name__}: {exc}") from None


def _fixed_part(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if has_glob(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _fetch_tree(
    filesystem: Any, pattern: str, base: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int,
    copy: Callable[[Any, str, Path, int], int],
) -> Fetched:  # fmt: skip
    listed = filesystem.glob(pattern, detail=True, maxdepth=MAX_LISTING_DEPTH)
    skipped: dict[str, int] = {}
    files = total = 0
    for remote, info in sorted(listed.items()):
        if info.get("type") != "file":
            continue
        size = int(info.get("size") or 0)
        relative = remote[len(base.rstrip("/")) + 1 :] if remote.startswith(base.rstrip("/") + "/") else remote
        target = _safe_relative(relative)
        if target is None:
            skipped["bad_name"] = skipped.get("bad_name", 0) + 1
            continue
        if size > max_file_bytes:
            skipped["too_large"] = skipped.get("too_large", 0) + 1
            continue
        if files >= max_files or total + size > max_bytes:
            skipped["over_caps"] = skipped.get("over_caps", 0) + 1
            continue
        local = destination / target
        safefs.private_dir(local.parent)
        try:
            total += copy(filesystem, remote, local, min(max_file_bytes, max_bytes - total))
        except ContextError:  # outside the allowed URLs, or larger than it said: left out, and counted
            skipped["refused"] = skipped.get("refused", 0) + 1
            continue
        files += 1
    if not files:
        raise ContextError(f"no files were fetched from {pattern!r}" + (f" (skipped: {skipped})" if skipped else ""))
    return Fetched(destination, True, files, total, skipped)


def _safe_name(name: str) -> str | None:
    """A listed name as one path segment, or None: no '.', '..', NUL, backslash, and no percent sign (an HTTP
    index page's link %2e%2e/ would be decoded by the store, not by us)."""
    if not name or name in (".", "..") or any(mark in name for mark in ("\x00", "\\", "%")):
        return None
    return name


def _safe_relative(relative: str) -> PurePosixPath | None:
    segments = relative.split("/")
    if any(_safe_name(segment) is None for segment in segments) or len(segments) > 64:
        return None
    return PurePosixPath(*segments)


def _copy(filesystem: Any, remote: str, local: Path, limit: int) -> int:
    """Stream one remote file into a new local file; a file that grows past `limit` is refused."""
    with filesystem.open(remote, "rb") as source:
        return _write(iter(lambda: source.read(COPY_BYTES), b""), local, limit, remote)


MAX_REDIRECTS = 5


def _checked(copy: Callable[[Any, str, Path, int], int], scheme: str, prefixes: tuple[str, ...]) -> Callable[..., int]:
    """`copy`, for listed objects that are themselves under an allowed prefix only (a listing is the
    store's, an HTTP index page's links anyone's)."""

    def checked(filesystem: Any, remote: str, local: Path, limit: int) -> int:
        check_allowed(remote if "://" in remote else f"{scheme}://{remote}", prefixes)
        return copy(filesystem, remote, local, limit)

    return checked


def _http_copier(prefixes: tuple[str, ...]) -> Callable[[Any, str, Path, int], int]:
    """Over HTTP, a download of our own (httpx, a dependency already): a redirect is followed only to a URL
    that is itself allowed, and anything but 200 is an error, not a file."""

    def copy(_filesystem: Any, remote: str, local: Path, limit: int) -> int:
        import httpx2

        url = remote
        with httpx2.Client(follow_redirects=False, timeout=HTTP_TIMEOUT_S) as client:
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        target = urljoin(url, response.headers.get("location", ""))
                        try:
                            check_allowed(target, prefixes)
                        except ContextError:
                            raise ContextError(f"{url!r} redirects to {target!r}, outside the allowed URLs") from None
                        url = target
                        continue
                    if response.status_code != 200:
                        raise ContextError(f"{url!r} answered HTTP {response.status_code}")
                    return _write(response.iter_bytes(COPY_BYTES), local, limit, url)
        raise ContextError(f"{remote!r} redirected more than {MAX_REDIRECTS} times")

    return copy


def _write(blocks: Any, local: Path, limit: int, what: str) -> int:
    descriptor = safefs.create_exclusive(local, readable=True)
    copied = 0
    try:
        with os.fdopen(descriptor, "wb") as target:
            for block in blocks:
                copied += len(block)
                if copied > limit:
                    raise ContextError(f"{what!r} sent more than the {limit:,} bytes allowed for it")
                target.write(block)
    except BaseException:
        local.unlink(missing_ok=True)
        raise
    return copied
