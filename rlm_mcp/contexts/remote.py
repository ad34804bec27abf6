"""Inputs that live elsewhere: a URL fetched by the server into the session's cache, then loaded as a file.

The worker has no network; the server fetches, with the filesystem of the URL's scheme (s3fs, gcsfs, adlfs,
the Hugging Face hub through fsspec: optional extras; HTTP with httpx, a dependency already) and that
filesystem's own standard credentials (environment, config files, instance roles), never anything the model
passes. A URL is fetched only under a prefix the operator allowed (--allow-url), as paths are read only under
--root.

Every URL is checked in the one spelling that is then sent (`canonical`): an HTTP client rewrites what it is
given (yarl drops tabs and line breaks, decodes %2E and resolves '..'; httpx drops a default port), so a
check of the raw string can pass a URL that is sent somewhere else. A URL holding whitespace or a control
character, a '.' or '..' segment (or one a server reads as such: '..;x' on a servlet container, '...'), a
query, a fragment, userinfo or an encoded '.', '/' or '\\' is refused; the rest is rewritten once (scheme
and host lower-cased, default port and empty segments dropped, percent escapes made uniform) and only that
form is checked, keyed, requested and shown. The same holds for every request a load makes, not only the
first: each link of an HTTP index page is checked before it is requested (the listing is ours, not fsspec's,
which requests links first), and so is each redirect. All of it is checked before anything is requested,
so an error never tells whether something outside the prefixes exists.

Fetched bytes are counted as they arrive and stop at the caps; names from a remote listing become paths
only after every segment is checked. An HTTP listing's index pages are bounded too, however a server makes
them: each page's size, their bytes, links and time in all (past which the listing fails), and what the
crawl keeps (the files a load may take, the directories it may read). `list_objects` is the listing of a
map's source, `read_object` the read of one of its objects on a cluster node, so maps take the same checks.
"""

from __future__ import annotations

import contextlib
import fnmatch
import html.parser
import os
import re
import secrets
import shutil
import string
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin

from rlm_mcp import safefs
from rlm_mcp.contexts.paths import has_glob
from rlm_mcp.errors import ContextError, TooLarge
from rlm_mcp.units import MiB

SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "hf")
EXTRA_OF = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs",
            "http": "httpx2", "https": "httpx2", "hf": "huggingface_hub"}  # fmt: skip
HTTP = ("http", "https")
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
COPY_BYTES = 8 * MiB
MAX_LISTING_DEPTH = 32  # directories below a glob's fixed part: an HTTP index page's links are crawled
MAX_INDEX_PAGES = 2_000  # HTTP index pages one listing reads
MAX_INDEX_BYTES = 4 * MiB  # of one index page: Apache's or nginx's index of 20,000 files (--dir-max-files) fits
MAX_CRAWL_BYTES = 64 * MiB  # of all the index pages one listing reads (a load's: at most its fetch limit too)
CRAWL_DEADLINE_S = 300.0  # for one listing's index pages, however slowly a server answers
MAX_CRAWL_LINKS = 500_000  # links one listing looks at (each is spelled out and checked: some 30 µs)
MAX_REDIRECTS = 5
HTTP_TIMEOUT_S = 60.0
SKIPPED_EXAMPLES = 5  # names of the files a tree load left out, per reason
DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PATH_KEPT = _UNRESERVED | frozenset("!$&'()*+,;=:@")  # sent as they are by httpx and by yarl alike
_HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-._~:[]")
# Never sent, even encoded: a server that decodes before it resolves would climb out ('.', '/', '\\'), and a
# control character is never part of the name of data.
_REFUSED_ESCAPES = frozenset({"2E", "2F", "5C", "7F", *(f"{code:02X}" for code in range(0x20))})


@dataclass(frozen=True)
class Fetched:
    """What a load fetched: a file, or a directory of files; how many bytes; what was skipped."""

    local: Path
    is_tree: bool
    files: int
    bytes: int
    skipped: dict[str, int]
    examples: dict[str, list[str]] = field(default_factory=dict)  # the first few names skipped, by reason


def scheme_of(text: str) -> str | None:
    """The URL scheme of `text` if it is a URL load_context fetches, else None (it is a path)."""
    match = _URL.match(text.strip())
    return match.group(1).lower() if match and match.group(1).lower() in SCHEMES else None


# -- one spelling per URL ---------------------------------------------------------------------------


def canonical(url: str, pattern: bool = False) -> str:
    """The one form of `url` that is checked, keyed, requested and shown; ContextError for a URL that has
    none (see the module's docstring). `pattern`: `url` may hold a glob ('*', '[...]'), which is kept as it
    is; otherwise, over HTTP, '[' and ']' are encoded as every client would."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ContextError(f"{url!r} holds whitespace or a control character; give the URL without them")
    match = _URL.match(url)
    scheme = match.group(1).lower() if match else ""
    if not match or scheme not in SCHEMES:
        raise ContextError(f"{url!r} is not a URL of a known scheme ({', '.join(SCHEMES)})")
    if any(mark in url for mark in "?#\\"):
        raise ContextError(f"{url!r} holds a query, a fragment or a backslash; give the plain URL of the data")
    authority, slash, path = url[match.end() :].partition("/")
    authority = authority.lower()
    if not authority or "@" in authority or any(char not in _HOST_CHARS for char in authority):
        raise ContextError(f"{url!r} holds credentials or an unusual host; give the plain URL of the data")
    if scheme in HTTP and authority.endswith(DEFAULT_PORTS[scheme]):
        authority = authority[: -len(DEFAULT_PORTS[scheme])]
    segments = [segment for segment in path.split("/") if segment]
    if any(_dot_segment(segment) for segment in segments):
        raise ContextError(f"{url!r} holds a '.' or '..' segment (or one read as such, '..;x'); give the plain URL")
    segments = [_segment(segment, url, scheme in HTTP, pattern) for segment in segments]
    text = "/".join(segments) + ("/" if segments and path.endswith("/") else "")
    if not text and not slash and scheme not in HTTP:
        return f"{scheme}://{authority}"
    return f"{scheme}://{authority}/{text}"


def _dot_segment(segment: str) -> bool:
    """Whether a server may take `segment` for '.' or '..': its part before the first ';' (a servlet
    container drops path parameters, so '..;x' climbs; '%3B' too, for one that decodes first) made of
    dots only, or of dots and spaces ('...', '..%20': Windows servers trim trailing dots and spaces). An
    encoded dot is refused apart (_segment)."""
    stem = re.split(r";|%3[bB]", segment, maxsplit=1)[0].replace("%20", " ")
    return "." in stem and not stem.strip(". ")


def _segment(segment: str, url: str, http: bool, pattern: bool) -> str:
    """One path segment with its percent escapes checked; over HTTP also spelled as the clients send it
    (unreserved characters decoded, escapes in upper case, everything else encoded)."""
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "%":
            code = segment[index + 1 : index + 3].upper()
            if len(code) != 2 or any(digit not in string.hexdigits for digit in code):
                raise ContextError(f"{url!r} holds a '%' that starts no escape; write it as %25")
            if code in _REFUSED_ESCAPES:
                raise ContextError(
                    f"{url!r} holds an encoded '.', '/', '\\' or control character; give the plain URL of the data"
                )
            decoded = chr(int(code, 16))
            if not http:
                out.append(segment[index : index + 3])
            else:
                out.append(decoded if decoded in _UNRESERVED else f"%{code}")
            index += 3
            continue
        if not http or char in _PATH_KEPT or (pattern and char in "*[]"):
            out.append(char)
        else:
            out.append("".join(f"%{byte:02X}" for byte in char.encode()))
        index += 1
    return "".join(out)


def check_allowed(url: str, prefixes: tuple[str, ...], pattern: bool = True) -> str:
    """`url` in its one spelling (`canonical`), if that is at or below an allowed prefix; else ContextError,
    decided before anything is requested."""
    if not prefixes:
        raise ContextError(
            f"{url!r} is a URL, and this server fetches none; restart rlm-mcp with --allow-url PREFIX "
            "(RLM_MCP_ALLOW_URL), e.g. --allow-url s3://team-logs/, to allow URLs under it"
        )
    spelled = canonical(url, pattern)
    if not any(_under(spelled, prefix) for prefix in _canonical_prefixes(prefixes)):
        raise ContextError(
            f"{url!r} is outside the allowed URL prefixes ({', '.join(prefixes)}); restart rlm-mcp with "
            "another --allow-url to allow it"
        )
    return spelled


def _canonical_prefixes(prefixes: tuple[str, ...]) -> list[str]:
    """The operator's prefixes, spelled as URLs are: one that has no such spelling allows nothing."""
    spelled = []
    for prefix in prefixes:
        with contextlib.suppress(ContextError):
            spelled.append(canonical(prefix))
    return spelled


def _under(url: str, prefix: str) -> bool:
    """`url` is `prefix` or below it, segment-wise (s3://logs does not allow s3://logs-private); both are
    canonical, so scheme and host compare as they are."""
    scheme, _, rest = prefix.partition("://")
    host, _, path = rest.partition("/")
    url_scheme, _, url_rest = url.partition("://")
    url_host, _, url_path = url_rest.partition("/")
    if (url_scheme, url_host) != (scheme, host):
        return False
    path = path.rstrip("/")
    return not path or url_path.rstrip("/") == path or url_path.startswith(path + "/")


def _below(url: str, directory: str) -> bool:
    """`url` is strictly below the directory URL `directory` (which ends in '/')."""
    return url.startswith(directory) and len(url) > len(directory)


# -- the stores --------------------------------------------------------------------------------------


def filesystem_for(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a (canonical, non-HTTP) URL and the path in it, made afresh (no cached
    instance or listing: an object changed since must not load stale)."""
    scheme = scheme_of(url) or ""
    try:
        import fsspec

        options: dict[str, Any] = {"skip_instance_cache": True}
        if scheme in ("s3", "gs", "gcs", "az", "abfs", "abfss"):
            options["use_listings_cache"] = False
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise _missing(scheme, exc) from None
    except (ValueError, OSError) as exc:
        raise ContextError(f"cannot open {url!r}: {exc}") from None


def _missing(scheme: str, exc: Exception) -> ContextError:
    return ContextError(
        f"loading {scheme}:// URLs needs `pip install 'rlm-mcp[remote]'` (fsspec and {EXTRA_OF.get(scheme, 'its')} "
        f"filesystem): {exc}"
    )


def _http_client() -> Any:
    import httpx2

    return httpx2.Client(follow_redirects=False, timeout=HTTP_TIMEOUT_S)


def _sendable(url: str) -> None:
    """Refuse a URL the HTTP clients would send spelled otherwise (a bug of `canonical` must not reopen the
    hole): httpx, which the server uses, and yarl, which fsspec on a cluster node uses."""
    import httpx2

    spellings = {str(httpx2.URL(url))}
    with contextlib.suppress(ImportError):
        import yarl

        spellings.add(str(yarl.URL(url)))
    if spellings != {url}:
        raise ContextError(f"{url!r} would be sent as {sorted(spellings - {url})[0]!r}; give the plain URL")


@contextlib.contextmanager
def _http_get(client: Any, url: str, prefixes: tuple[str, ...]) -> Iterator[tuple[Any, str]]:
    """GET a canonical, allowed URL: (response, the URL it came from). A redirect is followed only to a URL
    that is itself allowed, checked in its sent spelling before it is requested; with no `prefixes`, none
    is followed. Anything but 200 is an error (404 and 410 as FileNotFoundError)."""
    for _ in range(MAX_REDIRECTS + 1):
        _sendable(url)
        with client.stream("GET", url) as response:
            if response.is_redirect:
                url = _redirect_target(url, response.headers.get("location", ""), prefixes)
                continue
            if response.status_code in (404, 410):
                raise FileNotFoundError(url)
            if response.status_code != 200:
                raise ContextError(f"{url!r} answered HTTP {response.status_code}")
            yield response, url
            return
    raise ContextError(f"{url!r} redirected more than {MAX_REDIRECTS} times")


def _redirect_target(url: str, location: str, prefixes: tuple[str, ...]) -> str:
    if not prefixes:
        raise ContextError(f"{url!r} redirects, and a map follows no redirect; map the URL it redirects to")
    refusal = ContextError(f"{url!r} redirects outside the allowed URLs; load the URL it redirects to, if allowed")
    if any(char.isspace() or not char.isprintable() for char in location):
        raise refusal
    try:
        return check_allowed(urljoin(url, location), prefixes, pattern=False)
    except ContextError:
        raise refusal from None


# -- listing ----------------------------------------------------------------------------------------


@dataclass
class Listing:
    """The objects of a URL: (canonical URL, size if the store said one), under `base` (a directory URL
    ending in '/', or the one object's own URL when `single`), and what was left out, by reason."""

    base: str
    objects: list[tuple[str, int | None]]
    single: bool
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _listing(
    url: str, prefixes: tuple[str, ...], max_objects: int, filesystem: Any, client: Any,
    index_bytes: int = MAX_CRAWL_BYTES,
) -> Listing:  # fmt: skip
    """Every object of a canonical, allowed URL (a glob, a directory, or one object), each itself checked;
    nothing outside the prefixes is requested. Stops after `max_objects` + 1. `index_bytes`: the most an
    HTTP listing reads of index pages in all."""
    scheme = scheme_of(url) or ""
    head, _, path = url.partition("://")
    authority, _, path = path.partition("/")
    root = f"{head}://{authority}/"
    if has_glob(path):
        fixed = _fixed_part(path)
        base = check_allowed(root + (fixed + "/" if fixed else ""), prefixes, pattern=False)
        pattern = path[len(fixed) :].strip("/")
    elif path.endswith("/") or (scheme not in HTTP and _is_directory(filesystem, url)):
        base, pattern = url.rstrip("/") + "/", "**"
    else:
        return Listing(url, [(url, None)], True)
    if scheme in HTTP:
        return _crawl(client, base, pattern, prefixes, max_objects, index_bytes)
    return _store_listing(filesystem, base, pattern, prefixes, max_objects)


def _is_directory(filesystem: Any, url: str) -> bool:
    return bool(filesystem.isdir(url.partition("://")[2]))


def _fixed_part(path: str) -> str:
    fixed = []
    for part in path.split("/"):
        if has_glob(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def _matches(pattern: list[str], names: list[str]) -> bool:
    """Glob matching segment by segment, '**' standing for any number of segments (none included); a table
    over (pattern segment, name segment), so no pattern can make it backtrack."""
    reachable = {0}  # how many names the pattern's segments so far can have consumed
    for part in pattern:
        if part == "**":
            reachable = set(range(min(reachable), len(names) + 1)) if reachable else set()
        else:
            reachable = {at + 1 for at in reachable if at < len(names) and fnmatch.fnmatchcase(names[at], part)}
    return len(names) in reachable


def _store_listing(filesystem: Any, base: str, pattern: str, prefixes: tuple[str, ...], max_objects: int) -> Listing:
    """A store's own listing (S3, GCS, Azure, the hub): its names are keys, each checked as the URL it is."""
    scheme, _, base_path = base.partition("://")
    listing = Listing(base, [], False)
    found = filesystem.glob(base_path + pattern, detail=True, maxdepth=MAX_LISTING_DEPTH)
    for name, info in sorted(found.items()):
        if info.get("type") != "file":
            continue
        url = name if "://" in name else f"{scheme}://{name}"
        try:
            if check_allowed(url, prefixes, pattern=False) != url or not _below(url, base):
                raise ContextError(url)
        except ContextError:  # a key spelled otherwise than it would be sent, or outside: left out, counted
            listing.skip("refused")
            continue
        listing.objects.append((url, int(info.get("size") or 0)))
    return listing


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


class _CrawlOver(ContextError):
    """A listing passed its bytes of index pages or its time: it fails whole (a partial listing would be
    mapped or loaded as if it were all)."""


@dataclass
class _CrawlBudget:
    """What one listing may still spend on index pages: bytes, links and time (hostile pages can be many,
    large, dense and slow; none of it is fetched data, so no other cap counts it)."""

    base: str
    limit: int
    deadline: float
    spent: int = 0
    links: int = 0

    def spend(self, count: int) -> None:
        self.spent += count
        if self.spent > self.limit:
            raise _CrawlOver(f"the index pages of {self.base!r} passed {self.limit:,} bytes in all; narrow the "
                             "URL or glob to fewer directories")  # fmt: skip
        self.check_time()

    def look_at(self, links: int) -> None:
        self.links += links
        if self.links > MAX_CRAWL_LINKS:
            raise _CrawlOver(f"the index pages of {self.base!r} hold over {MAX_CRAWL_LINKS:,} links; narrow the URL "
                             "or glob to fewer directories")  # fmt: skip

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _CrawlOver(f"listing {self.base!r} took over {CRAWL_DEADLINE_S:g} s; narrow the URL or glob to "
                             "fewer directories")  # fmt: skip


def _crawl(
    client: Any, base: str, pattern: str, prefixes: tuple[str, ...], max_objects: int,
    index_bytes: int = MAX_CRAWL_BYTES,
) -> Listing:  # fmt: skip
    """The files below an HTTP directory, from its index pages: a link is followed or listed only if it is
    below the page that holds it and allowed, checked in its sent spelling before anything requests it.
    Bounded whatever the pages hold: at most MAX_INDEX_PAGES pages are queued (further directories are
    counted), a URL is remembered only when queued or listed (so at most max_objects + 1 + MAX_INDEX_PAGES),
    and the pages may take `index_bytes`, MAX_CRAWL_LINKS and CRAWL_DEADLINE_S in all, past which the listing
    fails."""
    parts = pattern.split("/")
    depth = MAX_LISTING_DEPTH if "**" in parts else len(parts) - 1
    listing = Listing(base, [], False)
    queue, seen = deque([(base, 0)]), {base}
    budget = _CrawlBudget(base, index_bytes, time.monotonic() + CRAWL_DEADLINE_S)
    while queue and len(listing.objects) <= max_objects:
        page, level = queue.popleft()
        final, hrefs = _index_page(client, page, prefixes, listing, budget, must_exist=page == base)
        budget.look_at(len(hrefs))
        for href in hrefs:
            budget.check_time()
            if href.endswith("/") and (level >= depth or len(seen) - len(listing.objects) >= MAX_INDEX_PAGES):
                if level < depth:  # a directory no page more is read for: counted, never spelled out
                    listing.skip("index_pages_over_cap")
                continue
            link = _link(final, href, prefixes, listing)
            if link is None or link in seen:
                continue
            if not _below(link, base):  # the page was redirected elsewhere: its links are not of this tree
                listing.skip("link_outside")
            elif link.endswith("/"):
                if level >= depth:
                    continue
                if len(seen) - len(listing.objects) >= MAX_INDEX_PAGES:  # the pages queued so far, base included
                    listing.skip("index_pages_over_cap")
                    continue
                seen.add(link)
                queue.append((link, level + 1))
            elif not _matches(parts, link[len(base) :].split("/")):
                continue
            elif len(listing.objects) > max_objects:  # counted, not kept: the load takes max_objects at most
                listing.skip("over_files")
            else:
                seen.add(link)
                listing.objects.append((link, None))
    listing.objects.sort()
    return listing


def _index_page(
    client: Any, page: str, prefixes: tuple[str, ...], listing: Listing, budget: _CrawlBudget, must_exist: bool
) -> tuple[str, list[str]]:
    """The links of one index page (HTML only, bounded), and the URL it came from after redirects; a page
    below the listed one that cannot be read (gone, refused, redirected out) is counted and left out. Its
    bytes are spent from `budget` as they arrive (blocks as the network gives them, so a slow page is timed)."""
    budget.check_time()
    try:
        with _http_get(client, page, prefixes) as (response, final):
            if response.headers.get("content-type", "text/html").partition(";")[0].strip() != "text/html":
                return final, []
            body = bytearray()
            for block in response.iter_bytes():
                budget.spend(len(block))
                body += block
                if len(body) > MAX_INDEX_BYTES:
                    raise ContextError(f"the index page {page!r} is over {MAX_INDEX_BYTES:,} bytes")
    except _CrawlOver:
        raise
    except (FileNotFoundError, ContextError):
        if must_exist:
            raise
        listing.skip("page_refused")
        return page, []
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    return final, parser.hrefs


def _link(page: str, href: str, prefixes: tuple[str, ...], listing: Listing) -> str | None:
    """A page's link as the canonical URL it would be requested as, if it is below the page and allowed;
    navigation (the page itself, its parents, sorting queries) is dropped without a count."""
    href = href.partition("#")[0]
    if not href or href.startswith("?"):
        return None
    if any(char.isspace() or not char.isprintable() for char in href):
        listing.skip("link_refused")
        return None
    joined = urljoin(page, href)
    bare = joined.partition("?")[0]
    if bare.rstrip("/") == page.rstrip("/") or (bare.endswith("/") and page.startswith(bare)):
        return None
    try:
        link = check_allowed(joined, prefixes, pattern=False)
    except ContextError:
        listing.skip("link_outside")
        return None
    if not _below(link, page):
        listing.skip("link_outside")
        return None
    return link


def list_objects(url: str, prefixes: tuple[str, ...], max_objects: int) -> list[str]:
    """The canonical URLs of every object of an allowed source (a glob, a directory or one object), in
    order, each checked as it will be read: the listing of an rlm_map or llm_map source."""
    url = check_allowed(url, prefixes)
    with _store(url) as (filesystem, client):
        try:
            listing = _listing(url, prefixes, max_objects, filesystem, client)
        except FileNotFoundError:
            raise ContextError(f"{url!r} does not exist (or this server's credentials cannot see it)") from None
        except ContextError:
            raise
        except Exception as exc:
            raise ContextError(f"listing {url!r} failed: {type(exc).__name__}: {exc}") from None
    if len(listing.objects) > max_objects:
        raise ContextError(f"{url!r} holds over {max_objects:,} objects, over --dir-max-files; narrow the glob")
    if not listing.objects:
        raise ContextError(f"{url!r} holds no objects (under the allowed URLs)")
    return [object_url for object_url, _ in listing.objects]


@contextlib.contextmanager
def _store(url: str) -> Iterator[tuple[Any, Any]]:
    """(fsspec filesystem, None) for a store, (None, httpx client) for HTTP."""
    if scheme_of(url) in HTTP:
        try:
            client = _http_client()
        except ImportError as exc:
            raise _missing(scheme_of(url) or "", exc) from None
        with client:
            yield None, client
    else:
        yield filesystem_for(url)[0], None


# -- reading ----------------------------------------------------------------------------------------


Blocks = tuple[Iterator[bytes], int | None]


@contextlib.contextmanager
def _blocks(filesystem: Any, client: Any, url: str, prefixes: tuple[str, ...]) -> Iterator[Blocks]:
    """The bytes of one canonical, allowed object, in blocks, and its size if the store said."""
    if client is not None:
        with _http_get(client, url, prefixes) as (response, _):
            length = response.headers.get("content-length", "")
            yield response.iter_bytes(COPY_BYTES), int(length) if length.isdigit() else None
    else:
        with filesystem.open(url.partition("://")[2], "rb") as source:
            size = getattr(source, "size", None)
            yield iter(lambda: source.read(COPY_BYTES), b""), size if isinstance(size, int) else None


def read_object(url: str, max_bytes: int, prefixes: tuple[str, ...] = ()) -> bytes:
    """One object of a map's source, read on a cluster node: `url` must be in its canonical spelling (as
    list_objects gave it), and over HTTP no redirect is followed (none at all without `prefixes`)."""
    if canonical(url) != url or has_glob(url.partition("://")[2]):
        raise ContextError(f"{url!r} is not a URL as the server listed it")
    data = bytearray()
    with _store(url) as (filesystem, client), _blocks(filesystem, client, url, prefixes) as (blocks, _):
        for block in blocks:
            data += block
            if len(data) > max_bytes:
                raise TooLarge(f"{url} holds more than the {max_bytes:,} bytes a map reads of one object")
    return bytes(data)


# -- fetching into the session's cache ---------------------------------------------------------------


def fetch(
    url: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int, prefixes: tuple[str, ...] = ()
) -> Fetched:
    """Fetch the file, directory or glob at `url` into `destination`, replacing what an earlier load put
    there only once the new copy is whole (a load of the same URL, or a cell still reading the old copy, is
    never left with half of each). Blocking. `url` is checked against `prefixes` here (and is fetched in
    its canonical spelling), as is every listed object and every HTTP redirect."""
    url = check_allowed(url, prefixes)
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
                   fetched.skipped, fetched.examples)  # fmt: skip


def _fetch_into(
    url: str, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int, prefixes: tuple[str, ...]
) -> Fetched:
    safefs.private_dir(destination)
    try:
        with _store(url) as (filesystem, client):
            listing = _listing(url, prefixes, max_files, filesystem, client, min(max_bytes, MAX_CRAWL_BYTES))
            copy = _copier(filesystem, client, prefixes)
            if listing.single:
                return _fetch_one(url, destination, max_bytes, copy)
            return _fetch_tree(listing, destination, max_bytes, max_files, max_file_bytes, copy)
    except FileNotFoundError:
        raise ContextError(f"{url!r} does not exist (or this server's credentials cannot see it)") from None
    except ContextError:
        raise
    except Exception as exc:  # each filesystem raises its own errors: say which, and what to check
        raise ContextError(f"fetching {url!r} failed: {type(exc).__name__}: {exc}") from None


Copy = Callable[[str, Path, int], int]


def _copier(filesystem: Any, client: Any, prefixes: tuple[str, ...]) -> Copy:
    def copy(url: str, local: Path, limit: int) -> int:
        with _blocks(filesystem, client, url, prefixes) as (blocks, size):
            if size is not None and size > limit:
                raise TooLarge(f"{url!r} holds {size:,} bytes, over the {limit:,} fetched for one load", size)
            return _write(blocks, local, limit, url)

    return copy


def _fetch_one(url: str, destination: Path, max_bytes: int, copy: Copy) -> Fetched:
    name = _safe_name(unquote(url.rstrip("/").rpartition("/")[2])) or "data"
    got = copy(url, destination / name, max_bytes)
    return Fetched(destination / name, False, 1, got, {})


def _fetch_tree(
    listing: Listing, destination: Path, max_bytes: int, max_files: int, max_file_bytes: int, copy: Copy
) -> Fetched:
    skipped = dict(listing.skipped)
    examples: dict[str, list[str]] = {}

    def skip(reason: str, name: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        named = examples.setdefault(reason, [])
        if len(named) < SKIPPED_EXAMPLES:
            named.append(name)

    files = total = 0
    for url, size in listing.objects:
        relative = url[len(listing.base) :]
        target = _safe_relative(relative, decode=scheme_of(url) in HTTP)
        if target is None:
            skip("bad_name", relative)
            continue
        if (size or 0) > max_file_bytes:
            skip("too_large", str(target))
            continue
        if files >= max_files or total + (size or 0) > max_bytes:
            skip("over_files" if files >= max_files else "over_caps", str(target))
            continue
        local = destination / target
        safefs.private_dir(local.parent)
        limit = min(max_file_bytes, max_bytes - total)
        try:
            total += copy(url, local, limit)
        except TooLarge:  # a size the listing did not say (HTTP), or larger than it said
            skip("too_large" if limit == max_file_bytes else "over_caps", str(target))
            continue
        except (ContextError, FileNotFoundError):  # gone, or refused: left out, and counted
            skip("refused", str(target))
            continue
        files += 1
    if not files and skipped.get("over_caps"):
        raise TooLarge(f"no files of {listing.base!r} fit in the {max_bytes:,} bytes fetched for one load")
    if not files:
        raise ContextError(
            f"no files were fetched from {listing.base!r}" + (f" (skipped: {skipped})" if skipped else "")
        )
    return Fetched(destination, True, files, total, skipped, examples)


def _safe_name(name: str) -> str | None:
    """A listed name as one path segment, or None: no '.', '..', NUL, backslash, and no percent sign (a
    store's key %2e%2e/ could be decoded by some reader, not by us)."""
    if not name or name in (".", "..") or any(mark in name for mark in ("\x00", "\\", "%", "/")):
        return None
    return name


def _safe_relative(relative: str, decode: bool = False) -> PurePosixPath | None:
    """`relative` (below a listing's base) as a local path, or None. `decode`: an HTTP URL's segments are
    percent-encoded; their names are the decoded ones (canonical refused encoded '.', '/', '\\')."""
    segments = relative.split("/")
    if decode:
        segments = [unquote(segment) for segment in segments]
    if any(_safe_name(segment) is None for segment in segments) or len(segments) > 64:
        return None
    return PurePosixPath(*segments)


def _write(blocks: Any, local: Path, limit: int, what: str) -> int:
    descriptor = safefs.create_exclusive(local, readable=True)
    copied = 0
    try:
        with os.fdopen(descriptor, "wb") as target:
            for block in blocks:
                copied += len(block)
                if copied > limit:
                    raise TooLarge(f"{what!r} sent more than the {limit:,} bytes allowed for it")
                target.write(block)
    except BaseException:
        local.unlink(missing_ok=True)
        raise
    return copied
