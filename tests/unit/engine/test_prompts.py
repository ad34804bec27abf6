"""What a root model the server drives is told: the declared tools, and the REPL's helpers as they really are.

The system prompt is the root model's only manual, so a helper it names with the wrong arguments is a call
that fails (or, for grep, a search for the whole input as a pattern) on every run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from rlm_mcp.engine import prompts
from rlm_mcp.tools.declarations import ROOT_TOOLS, RUN_CODE, SUB_QUERY
from rlm_mcp.worker import helpers
from rlm_mcp.worker.channel import make_llm_functions

LLM_FUNCTIONS = make_llm_functions(None)  # type: ignore[arg-type]  # only their signatures are read
HELPERS: dict[str, Callable[..., Any]] = {
    "peek": helpers.peek,
    "grep": helpers.grep,
    "chunk": helpers.chunk,
    **{name: LLM_FUNCTIONS[name] for name in ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched")},
}


def test_the_tools_are_the_declared_run_code_and_sub_query_with_their_words() -> None:
    assert [tool.name for tool in prompts.TOOLS] == [RUN_CODE.name, SUB_QUERY.name] == [t.name for t in ROOT_TOOLS]
    for tool, declared in zip(prompts.TOOLS, ROOT_TOOLS, strict=True):
        assert tool.description == declared.description
        offered = {parameter.name for parameter in declared.parameters if parameter.root}
        assert set(tool.schema["properties"]) == offered  # type: ignore[arg-type]
    assert prompts.TOOLS[0].schema["required"] == ["code"]
    assert all("session" not in tool.schema["properties"] for tool in prompts.TOOLS)  # type: ignore[operator]


def test_the_prompt_lists_the_contexts_the_turns_and_recursion_only_when_allowed() -> None:
    prompt = prompts.system_prompt({"context": "str, 12 chars", "files": "dict, 3 files"}, 7, can_recurse=False)
    assert "`context` (str, 12 chars); `files` (dict, 3 files)" in prompt
    assert "at most 7 turns" in prompt and "rlm_query" not in prompt
    assert "nothing yet" in prompts.system_prompt({}, 3, can_recurse=False)
    assert prompts.RECURSION in prompts.system_prompt({}, 3, can_recurse=True)


def test_the_memory_comes_under_its_heading_and_at_most_memory_lines() -> None:
    lines = [f"finding {index}" for index in range(prompts.MEMORY_LINES + 3)]
    prompt = prompts.system_prompt({}, 3, can_recurse=False, memory=lines)
    head, _, tail = prompt.partition(prompts.MEMORY)
    assert "finding" not in head
    assert tail.splitlines() == [f"- finding {index}" for index in range(prompts.MEMORY_LINES)]
    assert prompts.MEMORY not in prompts.system_prompt({}, 3, can_recurse=False)


def named_calls(prompt: str) -> dict[str, list[str]]:
    """Each helper the prompt shows called, with the argument names it shows (first mention)."""
    calls: dict[str, list[str]] = {}
    for name, arguments in re.findall(r"\b(\w+)\(([\w, ]*)\)", prompt):
        if name in HELPERS and name not in calls:
            calls[name] = [argument.strip() for argument in arguments.split(",") if argument.strip()]
    return calls


def leading_parameters(function: Callable[..., Any], count: int) -> list[str]:
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in inspect.signature(function).parameters.values() if p.kind in positional]
    return names[:count]


def test_every_helper_of_the_repl_is_shown_in_the_prompt_with_recursion() -> None:
    assert set(named_calls(prompts.system_prompt({}, 3, can_recurse=True))) == set(HELPERS)


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_each_helper_is_shown_with_its_real_leading_arguments(name: str) -> None:
    """The argument names the prompt shows are the helper's first positional parameters, in order (`x` is
    the prompt's word for any loaded text: the helpers call it x too)."""
    shown = named_calls(prompts.system_prompt({}, 3, can_recurse=True))[name]
    assert shown == leading_parameters(HELPERS[name], len(shown))
