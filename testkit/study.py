"""Scripted models for `rlm-mcp eval --study memory` (bench/bench_memory.py, tests/test_eval.py).

Without a handbook the root explores as a careful model new to the input would: it peeks, counts the
records, then classifies them in small chunks (many sub-calls). The distiller, reading that session's log,
proposes the behavior that would have saved the exploration and a finding about the format. A root whose
system prompt offers that behavior follows it: no exploration, four times larger chunks. So the figures show
what the memory carries and costs end to end (distillation calls, the lines added to the root's prompt,
retrieval), given a root that follows what it is offered; how often a real model does is what the same
study measures with real models.
"""

from __future__ import annotations

from rlm_mcp.evaluation import tasks
from testkit.distiller import ScriptedDistiller
from testkit.roots import ScriptedRoot, code

QUESTION = "How many records are positive, negative, neutral?"
BEHAVIOR = {
    "name": "behavior_classify_records_in_200_line_chunks",
    "instruction": "for one-record-per-line inputs skip exploring: chunk(context, 200, by='lines') and classify "
    "every chunk in one llm_query_batched, then sum the JSON counts",
    "when": "counting or classifying records of a line-oriented file",
    "input_kind": "text file .txt",
    "cells": [3, 4],
}
FINDING = {"about": "context", "text": "one record per line: 'record N | user uX | words'; labels are not tagged"}
CLASSIFY = tasks.OOLONG_STRATEGY[1]  # classify every chunk in one batch, sum the counts
EXPLORING = [
    "peek(context, 0, 600)",
    "grep(r'^record \\d+', context, count=True)",
    "chunks = chunk(context, 50, by='lines')\nlen(chunks)",
    CLASSIFY,
]
FOLLOWING = tasks.OOLONG_STRATEGY  # 200-line chunks, then CLASSIFY


def study_models() -> tuple[ScriptedRoot, ScriptedDistiller]:
    """The root (for the provider) and the distiller it hands every plain sub-call to."""
    distiller = ScriptedDistiller(behaviors=[BEHAVIOR], findings=[FINDING], other=tasks.answer)
    root = ScriptedRoot(
        {QUESTION: [code(cell) for cell in EXPLORING]},
        sub_answer=distiller,
        told={BEHAVIOR["name"]: {QUESTION: [code(cell) for cell in FOLLOWING]}},
    )
    return root, distiller
