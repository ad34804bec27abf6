"""The backend a replay runs on: every model call answered from the recording, none sent anywhere.

A sub-call is answered by what the session got for the same request (system, prompt, max_tokens), in the
order the session got them, so a prompt asked twice gets its two answers in turn; one that failed fails
again with its kind, so code that handled a failure replays the same way. A root model's turn is answered by
its question and position (see rlm_mcp/llm/recording.py). A request the session never made is refused with
kind "not_recorded" and counted: the replayed code asked something new, which is a difference to report,
not something to ask a model about.
"""

from __future__ import annotations

from collections import deque

from rlm_mcp.errors import SubCallError
from rlm_mcp.escaping import printable
from rlm_mcp.llm.recording import sub_call_sha256, turn_sha256
from rlm_mcp.llm.types import BaseBackend, ChatReply, ChatRequest, Completion, SubCall
from rlm_mcp.replay.record import Answer, Recording

NOT_RECORDED = "not_recorded"
PROMPT_PREVIEW = 80


class ReplayBackend(BaseBackend):
    def __init__(self, recording: Recording) -> None:
        self.name = "replay"
        self.default_model = recording.default_model
        self._answers = {key: deque(queue) for key, queue in recording.answers.items()}
        self._turns = {key: deque(queue) for key, queue in recording.turns.items()}
        self.not_recorded = 0  # requests refused: never made by the session, or not kept whole in its trace

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        answer = self._take(self._answers.get(sub_call_sha256(call)), "sub-call", call.prompt)
        model = answer.model or call.model
        return Completion(answer.text, model, answer.input_tokens, answer.output_tokens, None, answer.subscription)

    async def chat(self, request: ChatRequest, timeout_s: float) -> ChatReply:
        question = request.turns[0].text if request.turns else ""
        answer = self._take(self._turns.get(turn_sha256(request)), "root-model turn", question)
        return ChatReply(
            answer.text,
            answer.calls,
            request.model,
            answer.input_tokens,
            answer.output_tokens,
            None,
            answer.subscription,
        )

    def _take(self, queue: deque[Answer] | None, what: str, prompt: str) -> Answer:
        if not queue:
            self.not_recorded += 1
            raise SubCallError(
                f"not in the recording: the replayed code asked a {what} the session never asked "
                f"(prompt {printable(prompt, PROMPT_PREVIEW)!r})",
                kind=NOT_RECORDED,
            )
        answer = queue.popleft()
        if answer.unusable is not None:
            self.not_recorded += 1
            raise SubCallError(f"cannot replay this {what}: {answer.unusable}", kind=NOT_RECORDED)
        if answer.error is not None:
            raise SubCallError(answer.error, kind=answer.kind or "replayed")
        return answer
