"""Sub-calls sent back to the MCP client's own model (sampling).

Only possible on connections with a back channel (stdio, or stateful HTTP on the pre-2026 protocol) to a
client that declared the sampling capability: VS Code does, Claude Code and Claude Desktop do not. The
capability is deprecated by the 2026-07-28 specification, so it is the last choice of `auto`.
"""

from __future__ import annotations

import warnings
from typing import Any

from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import ModelHint, ModelPreferences, SamplingMessage, TextContent

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.pricing import estimate_tokens
from rlm_mcp.llm.types import BaseBackend, Completion, SubCall

# The deprecation is known and documented; warning on every sub-call would only flood the log.
warnings.filterwarnings("ignore", message="The sampling capability is deprecated", category=MCPDeprecationWarning)


def client_offers_sampling(session: Any) -> bool:
    capabilities = getattr(session, "client_capabilities", None)
    return capabilities is not None and getattr(capabilities, "sampling", None) is not None


class SamplingBackend(BaseBackend):
    name = "sampling"
    default_model: str | None = None  # the client picks; a configured sub_model is passed as a hint

    def __init__(self, session: Any) -> None:
        self._session = session

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        hints = ModelPreferences(hints=[ModelHint(name=call.model)]) if call.model != "client" else None
        try:
            result = await self._session.create_message(
                messages=[SamplingMessage(role="user", content=TextContent(type="text", text=call.prompt))],
                max_tokens=call.max_tokens,
                system_prompt=call.system,
                model_preferences=hints,
            )
        except Exception as exc:  # the client may refuse, time out, or have no back channel
            raise SubCallError(f"the client's sampling request failed: {exc}", kind="sampling") from None
        content = result.content
        text = content.text if getattr(content, "type", None) == "text" else str(content)
        return Completion(
            text,
            result.model or call.model,
            estimate_tokens(call.system, call.prompt),
            estimate_tokens(text),
        )
