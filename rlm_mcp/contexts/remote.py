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
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rlm_mcp import safefs
from rlm_mcp.contexts.paths import ContextError, has_glob
from rlm_mcp.units import MiB

SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "hf")
EXTRA_OF = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs",
            "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub"}  # fmt: skip
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
COPY_BYTES = 8 * MiB


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
    if any(segment in ("..", ".") for segment in path.split("/")) or "?" in url or "#" in url:
        raise ContextError(f"{url!r} holds '..', '.', a query or a fragment; give the plain URL of the data")
    if not any(url.startswith(prefix) for prefix in prefixes):
        raise ContextError(
            f"{url!r} is outside the allowed URL prefixes ({', '.join(prefixes)}); restart rlm-mcp with "
            "another --allow-url to allow it"
        )


def _filesystem(url: str) -> tuple[Any, str]:
    scheme = scheme_of(url) or ""
    try:
        import fsspec

        # A fresh filesystem each load, listing afresh: an object changed since must not load stale.
        options: dict[str, Any] = {"skip_instance_cache": True}
        if scheme in ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https"):
            options["use_listings_cache"] = False
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise ContextError(
            f"loading {scheme}:// URLs needs `pip install 'rlm-mcp[remote]'` (fsspec and {EXTRA_OF.get(scheme, 'its')} "
            f"filesystem): {exc}"
        ) from None
    except (ValueError, OSError) as exc:
        raise ContextError(f"cannot open {url!r}: {exc}") from None


def fetch(url: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int) -> Fetched:
    """Fetch the file, directory or glob at `url` into `destination` (made afresh). Blocking."""
    filesystem, path = _filesystem(url)
    if destination.exists():
        shutil.rmtree(destination)
    safefs.private_dir(destination)
    try:
        if has_glob(path):
            return _fetch_tree(filesystem, path, _fixed_part(path), destination, max_bytes, max_files, max_file_bytes)
        info = filesystem.info(path)
        if info.get("type") == "directory" or path.endswith("/"):  # over HTTP a directory is its index page
            pattern = path.rstrip("/") + "/**"
            return _fetch_tree(filesystem, pattern, path.rstrip("/"), destination, max_bytes, max_files, max_file_bytes)
        size = int(info.get("size") or 0)
        if size > max_bytes:
            raise ContextError(f"{url!r} holds {size:,} bytes, over the {max_bytes:,} fetched for one load")
        name = _safe_name(PurePosixPath(path).name) or "data"
        got = _copy(filesystem, path, destination / name, max_bytes)
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
    filesystem: Any, pattern: str, base: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int
) -> Fetched:
    listed = filesystem.glob(pattern, detail=True)
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
        total += _copy(filesystem, remote, local, min(max_file_bytes, max_bytes - total))
        files += 1
    if not files:
        raise ContextError(f"no files were fetched from {pattern!r}" + (f" (skipped: {skipped})" if skipped else ""))
    return Fetched(destination, True, files, total, skipped)


def _safe_name(name: str) -> str | None:
    if not name or name in (".", "..") or "\x00" in name or "\\" in name:
        return None
    return name


def _safe_relative(relative: str) -> PurePosixPath | None:
    segments = relative.split("/")
    if any(_safe_name(segment) is None for segment in segments) or len(segments) > 64:
        return None
    return PurePosixPath(*segments)


def _copy(filesystem: Any, remote: str, local: Path, limit: int) -> int:
    """Stream one remote file into a new local file; a file that grows past `limit` is refused."""
    descriptor = safefs.create_exclusive(local, readable=True)
    copied = 0
    try:
        with filesystem.open(remote, "rb") as source, os.fdopen(descriptor, "wb") as target:
            while block := source.read(COPY_BYTES):
                copied += len(block)
                if copied > limit:
                    raise ContextError(f"{remote!r} sent more than the {limit:,} bytes allowed for it")
                target.write(block)
    except BaseException:
        local.unlink(missing_ok=True)
        raise
    return copied
