"""A scripted distiller: a fake sub-model that answers the memory's reflect and distil prompts as told.

It recognises the two prompts by their opening words (what any model reads first); everything else goes to
`other`, so the same fake can also serve a session's own sub-calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REFLECT_OPENING = "Reflect on this session's work log."
DISTIL_OPENING = "From this reflection on a session, distil what is worth keeping."


@dataclass
class ScriptedDistiller:
    behaviors: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = "good"
    raw: str | None = None  # the distil answer as given, instead of JSON made from the lists
    other: Callable[[str, str | None, str], str] = lambda prompt, system, model: f"ans:{prompt[:40]}"
    logs: list[str] = field(default_factory=list)  # the work logs it was shown

    def __call__(self, prompt: str, system: str | None, model: str) -> str:
        if prompt.startswith(REFLECT_OPENING):
            self.logs.append(prompt)
            return f"The session went as it should.\nVERDICT: {self.verdict}"
        if prompt.startswith(DISTIL_OPENING):
            return (
                self.raw
                if self.raw is not None
                else json.dumps({"behaviors": self.behaviors, "findings": self.findings})
            )
        return self.other(prompt, system, model)
