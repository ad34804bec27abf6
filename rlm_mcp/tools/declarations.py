"""Each tool declared once: its name, its description, its parameters (types and descriptions) and its hints.

Everything else reads this: the MCP surface (surface/server.py gives each tool's function the declared signature, so
the SDK publishes these names, types, defaults and words), the root loop the server drives (engine/prompts.py
offers run_code and sub_query with the parameters marked `root`), replay (which recorded arguments it may send
again, and of which types) and the docs (a test holds the README's Tools table and the bundle's manifest to it).
Descriptions are read by a root model on every turn, so they are short and exact; the module imports only the
standard library, so any floor may read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin


class _Required:
    """The default of a parameter a call must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array"}


@dataclass(frozen=True)
class Parameter:
    """One argument of a tool. `type` is the Python annotation the MCP SDK turns into its JSON schema; `root`
    says whether a root model the server drives is offered it too ("required", "optional"), or not ("")."""

    name: str
    type: Any
    description: str
    default: Any = REQUIRED
    root: Literal["", "required", "optional"] = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def value_types(self) -> tuple[type, ...]:
        """The Python types a call's value may have: an int passes where a float is wanted, as in JSON."""
        base = _base_type(self.type)
        return (int, float) if base is float else (base,)

    @property
    def json_type(self) -> str:
        return JSON_TYPES[_base_type(self.type)]


@dataclass(frozen=True)
class ToolDeclaration:
    """A tool: what its callers and the model read. The hints are MCP's ToolAnnotations (None: not stated)."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    read_only: bool | None = None
    destructive: bool | None = None
    open_world: bool | None = None

    def parameter(self, name: str) -> Parameter:
        return next(parameter for parameter in self.parameters if parameter.name == name)

    @property
    def offered_to_root(self) -> bool:
        return any(parameter.root for parameter in self.parameters)

    def root_schema(self) -> dict[str, object]:
        """The JSON schema of the arguments a driven root model may pass: types only, since it has none of
        the MCP options (no waiting, no session) and its system prompt says how to use them."""
        offered = [parameter for parameter in self.parameters if parameter.root]
        return {
            "type": "object",
            "properties": {parameter.name: {"type": parameter.json_type} for parameter in offered},
            "required": [parameter.name for parameter in offered if parameter.root == "required"],
        }


def _base_type(annotation: Any) -> type:
    """`str | None` -> str, `list[str] | None` -> list."""
    if get_origin(annotation) in (Union, UnionType):
        (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
    origin = get_origin(annotation)
    return origin if isinstance(origin, type) else annotation


SESSION = Parameter(
    "session", str | None, "Session handle from an earlier result (HTTP clients without MCP sessions)", None
)

LOAD_CONTEXT = ToolDeclaration(
    "load_context",
    "Load a file (str; huge ones memory-mapped; JSON/JSONL/CSV parsed; .gz/.bz2/.xz opened), a directory or a "
    "glob (dict of relative path -> text; .gitignore honoured, binaries skipped) into a REPL variable, by "
    "reference. Returns its size and a short preview, not the content.",
    (
        Parameter("path", str | None, "File, directory or glob under an allowed root", None),
        Parameter("text", str | None, "Small inline text, instead of path", None),
        Parameter("name", str, "Variable to bind", "context"),
        Parameter("exclude", list[str] | None, "Globs to leave out of a directory", None),
        SESSION,
    ),
    read_only=False,
    open_world=False,
)

RUN_CODE = ToolDeclaration(
    "run_code",
    "Run Python in the session's persistent REPL. Returns stdout/stderr (long output cut to head and tail; "
    "all of it in `_out`), the last expression's value, errors, and which variables changed.",
    (
        Parameter("code", str | None, "Python source; omit to wait for the running cell", None, root="required"),
        Parameter("timeout_s", float | None, "Time limit of the cell in seconds", None),
        Parameter("wait_s", float | None, "Answer `running` after this many seconds", None),
        Parameter("interrupt", bool, "Stop the running cell", False),
        Parameter("max_output_chars", int | None, "Fewer output characters than the default", None),
        SESSION,
    ),
    destructive=False,
    open_world=False,
)

SUB_QUERY = ToolDeclaration(
    "sub_query",
    "Ask a sub-model one question. `context` is a REPL expression (e.g. chunks[3], context[i:j]) whose text is "
    "sent with the prompt, so you never paste it. Returns the answer, model, tokens and cost.",
    (
        Parameter("prompt", str, "The question or instruction", root="required"),
        Parameter("context", str | None, "REPL expression giving the text to ask about", None, root="optional"),
        Parameter("model", str | None, "Sub-model; default: the server's", None),
        Parameter("max_tokens", int | None, "Longest answer, in tokens", None),
        SESSION,
    ),
    read_only=True,
)

TOOLS = (LOAD_CONTEXT, RUN_CODE, SUB_QUERY)
ROOT_TOOLS = tuple(tool for tool in TOOLS if tool.offered_to_root)  # what a root model the server drives gets
