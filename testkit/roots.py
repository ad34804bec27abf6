"""A scripted root model for the fake provider: what a child RLM's root (or `rlm-mcp ask`'s) does, step by step.

A request that offers tools comes from a root loop; every other request is a plain sub-call and goes to
`sub_answer`. A root's conversation is picked by its question (the first user message: the first script
whose key it contains) and its step by how many turns the assistant has had, so concurrent conversations
never mix. A step is code to run (`code(...)`), a final answer (a str), or a function of what the model was
last told (the tool's result), returning either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from testkit.fakes import AnswerFn, ToolUse, default_answer

Step = str | ToolUse | Callable[[str], "str | ToolUse"]


def code(source: str) -> ToolUse:
    return ToolUse("run_code", {"code": source})


class ScriptedRoot:
    def __init__(
        self,
        scripts: dict[str, Sequence[Step]],
        sub_answer: AnswerFn = default_answer,
        recursive: dict[str, Sequence[Step]] | None = None,
        told: dict[str, dict[str, Sequence[Step]]] | None = None,
    ) -> None:
        """`recursive`: scripts that take precedence when the root is told it may call rlm_query; `told`:
        marker -> scripts that take precedence when its system prompt contains the marker (what a root does
        once it reads, say, a behavior the workspace's memory offers)."""
        self.scripts = scripts
        self.recursive = recursive or {}
        self.told = told or {}
        self.sub_answer = sub_answer
        self.conversations: list[list[Any]] = []  # every root request's messages, in arrival order
        self.systems: list[str | None] = []  # and its system prompt

    def __call__(self, prompt: str, system: str | None, model: str, *, request: dict[str, Any]) -> Any:
        if "tools" not in request:
            return self.sub_answer(prompt, system, model)
        messages = request["messages"]
        self.conversations.append(messages)
        self.systems.append(system)
        question = next(_text(m["content"]) for m in messages if m["role"] == "user")
        chosen = [*self.recursive.items()] if system and "rlm_query(" in system else []
        for marker, scripts in self.told.items():
            if system and marker in system:
                chosen = [*scripts.items(), *chosen]
        script = next((steps for key, steps in [*chosen, *self.scripts.items()] if key in question), None)
        if script is None:
            return f"no script for {question[:80]!r}"
        turn = sum(1 for m in messages if m["role"] == "assistant")
        step = script[min(turn, len(script) - 1)]
        return step(prompt) if callable(step) else step


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))
