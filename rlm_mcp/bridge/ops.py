"""The messages between the server and its REPL worker (and its Ray driver): each name defined once, each
shape as a TypedDict.

A message is a JSON object whose "op" names it; a reply has no "op" and carries the "id" of the request it
answers (the host tells replies from the worker's own requests that way, host/worker_host.py). Both sides
import these names instead of spelling the strings, so a renamed or a new message shows up everywhere it is
used. The TypedDicts say what each side may expect; neither side trusts them: whatever the worker sends is
checked field by field where it is served (it comes from model-written code).

Adding a REPL capability is one TypedDict here, one function in the worker that sends it
(channel.request), and one handler registered in the server's session services (session/services.py);
docs/architecture.md walks through an example.

Interrupting a cell is no message: the host sends the worker SIGINT. Standard library only (both sides).
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypedDict

# The default cap on a cell's stdout (and stderr), in characters: the server's --max-output-chars and what
# the worker assumes when an exec request names none.
DEFAULT_OUTPUT_CHARS: Final = 8_000

# -- the host asks the worker (one reply each) -----------------------------------------------------------
START: Final = "start"  # the first frame: the lock-down policy (the worker answers READY, not a reply)
EXEC: Final = "exec"  # run a cell
EVAL_TEXT: Final = "eval_text"  # an expression's value as text (sub_query's context)
LOAD: Final = "load"  # bind a context
UNLOAD: Final = "unload"  # drop a context
PERSIST: Final = "persist"  # snapshot variables after each cell from now on
VARIABLES: Final = "variables"  # describe the variables code defined
RESTORE: Final = "restore"  # bring snapshotted variables back after a restart

# -- the worker's frames to the host: its hello, and what its code asks the server (one reply each) ------
READY: Final = "ready"  # the answer to START: locked down and serving
LLM: Final = "llm"  # llm_query / llm_query_batched
RLM: Final = "rlm"  # rlm_query / rlm_query_batched
MEMORY: Final = "memory"  # behaviors(), remember(), recall(), distill()
MAP: Final = "map"  # rlm_map / llm_map (also the server's request to its Ray driver, cluster/driver.py)
FORGET: Final = "forget"  # unload(name) in code: the context is not to come back after a restart

# -- the Ray driver's frames to the server (cluster/driver.py) --------------------------------------------
RESULT: Final = "result"  # one task of a map finished
DONE: Final = "done"  # the map is over

HOST_REQUESTS: Final = (EXEC, EVAL_TEXT, LOAD, UNLOAD, PERSIST, VARIABLES, RESTORE)
WORKER_REQUESTS: Final = (LLM, RLM, MEMORY, MAP, FORGET)

Op = Literal[
    "start", "exec", "eval_text", "load", "unload", "persist", "variables", "restore",
    "ready", "llm", "rlm", "memory", "map", "forget", "result", "done",
]  # fmt: skip


class Reply(TypedDict, total=False):
    """Every reply: "ok", and on failure a one-line "error" (and a "kind" where the caller tells failures
    apart, e.g. "budget", "host"); "id" is the request's. The fields of each operation's reply come on top."""

    id: int | str | None
    ok: bool
    error: str
    kind: str


# -- the host's requests ---------------------------------------------------------------------------------


class StartRequest(TypedDict):
    op: Literal["start"]
    policy: dict[str, Any]  # SandboxPolicy.as_dict()
    paths: list[str]  # the operator's PYTHONPATH, put on the worker's sys.path
    work_dir: str


class ReadyMessage(TypedDict):
    op: Literal["ready"]
    pid: int
    python: str
    sandbox: list[dict[str, Any]]  # each lock-down layer: name, active, detail
    lockdown_s: float


class ExecRequest(TypedDict):
    op: Literal["exec"]
    code: str
    cell: int
    output_limit: int  # characters of stdout and of stderr returned, the rest elided


class ExecReply(Reply, total=False):
    stdout: str
    stdout_chars: int
    stderr: str
    stderr_chars: int
    result: str | None
    error_type: str | None
    changed: list[dict[str, Any]]
    changed_total: int
    restored: list[str]
    deleted_contexts: list[str]
    threads: list[str]
    snapshot: dict[str, Any] | None  # saved {name: digest}, removed, unsaved {name: why}, elapsed_s


class EvalTextRequest(TypedDict):
    op: Literal["eval_text"]
    expr: str


class EvalTextReply(Reply, total=False):
    text: str


class LoadRequest(TypedDict, total=False):
    """By kind: "text" (text), "value" (value: a child's dict or list), "file" (path, size, mmap_bytes,
    max_bytes) or "files" (root, files, max_file_bytes, max_total_bytes)."""

    op: Literal["load"]
    name: str
    kind: Literal["text", "value", "file", "files"]
    text: str
    value: dict[str, Any] | list[Any]
    path: str
    size: int
    mmap_bytes: int
    max_bytes: int
    root: str
    files: list[str]
    max_file_bytes: int
    max_total_bytes: int


class LoadReply(Reply, total=False):
    kind: str  # what was bound: "str", "files", "json", a file's format...
    files: int | None
    chars: int
    lines: int
    bytes: int
    replaced_chars: int
    preview: str
    binary: list[str]
    unreadable: list[str]
    too_large: list[str]
    with_replacements: list[str]
    notes: list[str]


class UnloadRequest(TypedDict):
    op: Literal["unload"]
    name: str


class PersistRequest(TypedDict):
    op: Literal["persist"]
    dir: str
    max_bytes: int


class VariablesRequest(TypedDict):
    op: Literal["variables"]


class VariablesReply(Reply, total=False):
    variables: list[dict[str, Any]]  # name, type, size, preview


class RestoreRequest(TypedDict):
    op: Literal["restore"]
    digests: dict[str, str]  # name -> the digest of its snapshot file


class RestoreReply(Reply, total=False):
    restored: list[str]
    lost: dict[str, str]  # name -> why it could not come back


# -- the worker's requests -------------------------------------------------------------------------------


class SubCall(TypedDict):
    prompt: str
    system: str | None
    model: str | None
    max_tokens: int | None


class LLMRequest(TypedDict):
    op: Literal["llm"]
    calls: list[SubCall]
    confirm: bool  # run a batch estimated over --confirm-batch-usd
    behaviors: bool  # add the handbook's relevant behaviors to the system prompt


class LLMReply(Reply, total=False):
    results: list[dict[str, Any]]  # per call, in order: ok and text, or ok false, error and kind


class ChildSpec(TypedDict):
    prompt: str
    context: Any  # a str, or a dict or list of str (worker/channel.py _child_context)
    model: str | None
    max_iterations: int | None
    timeout_s: float | None


class RLMRequest(TypedDict):
    op: Literal["rlm"]
    children: list[ChildSpec]


class RLMReply(Reply, total=False):
    results: list[dict[str, Any]]  # per child, in order (engine/children.py)


class MemoryRequest(TypedDict, total=False):
    """By action: "behaviors" (query, k), "remember" (text, about), "recall" (about), "distill"."""

    op: Literal["memory"]
    action: Literal["behaviors", "remember", "recall", "distill"]
    query: str
    k: int
    text: str
    about: str | None


class MemoryReply(Reply, total=False):
    lines: list[str]
    text: str


class MapRequest(TypedDict, total=False):
    """By kind: "function" (code, name: the def's source) or "llm" (template, model, max_tokens, confirm)."""

    op: Literal["map"]
    kind: Literal["function", "llm"]
    source: str  # a URL or glob under --allow-url
    code: str
    name: str
    template: str
    model: str | None
    max_tokens: int | None
    confirm: bool


class MapReply(Reply, total=False):
    results: list[dict[str, Any]]  # per object: path, and ok with value or text, or error
    sandbox: str  # the nodes' lock-down gaps, said on stderr


class ForgetRequest(TypedDict):
    op: Literal["forget"]
    name: str


class ForgetReply(Reply, total=False):
    freed: int  # bytes of fetched data freed with the context
