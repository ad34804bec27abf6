"""The message names are defined once and each has its TypedDict (rlm_mcp/bridge/ops.py).

A reply carries no "op" (the host tells a reply from the worker's own request that way), so no Reply
TypedDict may declare one, and every request names exactly its own op.
"""

from __future__ import annotations

import typing
from typing import Literal, get_args, get_origin, get_type_hints, is_typeddict

from rlm_mcp.bridge import ops

OP_NAMES = {
    name: value
    for name, value in vars(ops).items()
    if name.isupper() and isinstance(value, str) and not name.startswith("_")
}


def typeddicts() -> dict[str, type]:
    return {name: value for name, value in vars(ops).items() if isinstance(value, type) and is_typeddict(value)}


def op_of(cls: type) -> str | None:
    """The op a TypedDict's `op` field is pinned to, or None if it has none."""
    hint = get_type_hints(cls).get("op")
    if hint is None:
        return None
    assert get_origin(hint) is Literal, f"{cls.__name__}.op is {hint}, not a Literal"
    (value,) = get_args(hint)
    return value


def test_every_request_name_is_unique_within_and_across_the_lists() -> None:
    requests = [*ops.HOST_REQUESTS, *ops.WORKER_REQUESTS]
    assert len(set(ops.HOST_REQUESTS)) == len(ops.HOST_REQUESTS)
    assert len(set(ops.WORKER_REQUESTS)) == len(ops.WORKER_REQUESTS)
    assert len(set(requests)) == len(requests), "a name in both lists could be taken for the other side's"


def test_every_op_name_is_defined_once() -> None:
    values = list(OP_NAMES.values())
    assert len(set(values)) == len(values), OP_NAMES
    assert set(values) == set(get_args(ops.Op)), "the Op literal and the names must list the same messages"
    assert len(get_args(ops.Op)) == len(set(get_args(ops.Op)))


def test_every_request_has_a_typeddict_naming_its_op() -> None:
    pinned: dict[str, list[str]] = {}
    for name, cls in typeddicts().items():
        op = op_of(cls)
        if op is not None:
            pinned.setdefault(op, []).append(name)
    for op in (*ops.HOST_REQUESTS, *ops.WORKER_REQUESTS, ops.START, ops.READY):
        assert len(pinned.get(op, [])) == 1, f"{op!r} has TypedDicts {pinned.get(op)}, expected exactly one"
    assert set(pinned) <= set(get_args(ops.Op)), "a TypedDict names an op that is not declared"


def test_no_reply_carries_an_op() -> None:
    replies = {name: cls for name, cls in typeddicts().items() if name.endswith("Reply")}
    assert "ExecReply" in replies and "ForgetReply" in replies
    for name, cls in replies.items():
        assert "op" not in get_type_hints(cls), name
        assert set(get_type_hints(ops.Reply)) <= set(get_type_hints(cls)), f"{name} does not extend Reply"


def test_every_typeddict_field_resolves() -> None:
    """A misspelt annotation would only fail when something asked for the hints: ask for all of them."""
    for name, cls in typeddicts().items():
        assert get_type_hints(cls), name


def test_the_default_output_cap_is_a_positive_int() -> None:
    assert isinstance(ops.DEFAULT_OUTPUT_CHARS, int) and ops.DEFAULT_OUTPUT_CHARS > 0
    assert typing.get_type_hints(ops.ExecRequest)["output_limit"] is int
