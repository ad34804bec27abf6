"""What a root model driven by the server is told: the system prompt and the two tools.

Read by the root model on every turn, so short and exact. The tools are the declared ones
(rlm_mcp/tools/declarations.py): the same names and descriptions an MCP client's model reads, with only the
parameters a loop-driven root needs; the system prompt says in a few lines what the server's instructions say.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlm_mcp.llm.types import Tool
from rlm_mcp.memory.text import MEMORY_HEADING
from rlm_mcp.tools.declarations import ROOT_TOOLS

TOOLS = tuple(Tool(tool.name, tool.description, tool.root_schema()) for tool in ROOT_TOOLS)  # run_code, sub_query
ANSWER_VARIABLE = "answer"

SYSTEM = """\
You answer a question about an input too large to read at once. It is not in this conversation: it is loaded \
in a persistent Python REPL as {contexts}. Use run_code to look at it (len, slices, peek(x), grep(pattern, x), \
chunk(x, size)) and, inside code, llm_query(prompt) or llm_query_batched(prompts) to ask a sub-model about \
pieces (a few thousand tokens each); keep results in variables and print only what you need.{recursion}
Finish by replying with the answer and no tool call, or by setting `answer = ...` in the REPL (its text is \
returned as it is). You have at most {iterations} turns; be brief."""

RECURSION = (
    " rlm_query(prompt, context) runs a child RLM like you on a piece and returns its answer "
    "(rlm_query_batched(prompts, contexts) for several); use it only for pieces that need code of their own."
)

LAST_TURN = (
    "You have used every turn you had. Reply now, without tools, with your best answer from what you found; "
    "say what is uncertain."
)


MEMORY = MEMORY_HEADING
MEMORY_LINES = 8


def system_prompt(contexts: dict[str, str], iterations: int, can_recurse: bool, memory: Sequence[str] = ()) -> str:
    """`contexts`: each loaded variable's name and a short description (type and size); `memory`: what
    the workspace's memory offered when they were loaded: only what a person approved (or the operator's
    --memory-auto-approve let through), behaviors escaped and findings quoted with their provenance, each
    one bounded line (memory/service.py), under a heading that says they are data."""
    listed = "; ".join(f"`{name}` ({what})" for name, what in contexts.items()) or "nothing yet"
    prompt = SYSTEM.format(contexts=listed, recursion=RECURSION if can_recurse else "", iterations=iterations)
    if memory:
        prompt += MEMORY + "\n".join(f"- {line}" for line in memory[:MEMORY_LINES])
    return prompt
