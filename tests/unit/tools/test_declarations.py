"""Each tool declared once (rlm_mcp/tools/declarations.py): names, parameters, their JSON types and the root's schema.

tests/unit/test_tools_declared_once.py holds the server, the engine, replay and the docs to the declaration;
these hold the declaration to what its docstrings promise.
"""

from __future__ import annotations

import pytest

from rlm_mcp.tools.declarations import (
    JSON_TYPES,
    LOAD_CONTEXT,
    REQUIRED,
    ROOT_TOOLS,
    RUN_CODE,
    SESSION,
    SUB_QUERY,
    TOOLS,
    Parameter,
    ToolDeclaration,
)


def test_the_three_tools_in_order_with_unique_parameter_names() -> None:
    assert [tool.name for tool in TOOLS] == ["load_context", "run_code", "sub_query"]
    for tool in TOOLS:
        names = [parameter.name for parameter in tool.parameters]
        assert len(names) == len(set(names)), tool.name
        assert tool.parameters[-1] is SESSION, f"{tool.name}: every tool takes the session handle, last"


def test_every_declared_type_has_a_json_type() -> None:
    """A parameter of a type JSON_TYPES cannot name would break the root's schema and replay's checks."""
    for tool in TOOLS:
        for parameter in tool.parameters:
            assert parameter.json_type in JSON_TYPES.values(), (tool.name, parameter.name)
            assert parameter.description and parameter.description == parameter.description.strip()


@pytest.mark.parametrize(
    "annotation, json_type, value_types",
    [
        (str, "string", (str,)),
        (str | None, "string", (str,)),
        (int | None, "integer", (int,)),
        (float | None, "number", (int, float)),  # a JSON number may arrive as an int
        (bool, "boolean", (bool,)),
        (list[str] | None, "array", (list,)),
    ],
)
def test_a_parameters_json_type_and_accepted_values_come_from_its_annotation(
    annotation: object, json_type: str, value_types: tuple[type, ...]
) -> None:
    parameter = Parameter("p", annotation, "A parameter")
    assert parameter.json_type == json_type
    assert parameter.value_types == value_types


def test_a_parameter_is_required_only_without_a_default() -> None:
    assert Parameter("p", str, "d").required and repr(REQUIRED) == "REQUIRED"
    assert not Parameter("p", str | None, "d", None).required  # None is a default, not "required"
    assert not Parameter("p", bool, "d", False).required
    assert SUB_QUERY.parameter("prompt").required
    assert not RUN_CODE.parameter("code").required  # omitted: wait for the running cell
    assert LOAD_CONTEXT.parameter("name").default == "context"


def test_parameter_lookup_by_name() -> None:
    assert RUN_CODE.parameter("timeout_s").json_type == "number"
    with pytest.raises(StopIteration):
        RUN_CODE.parameter("no_such_argument")


def test_the_root_model_is_offered_run_code_and_sub_query_with_types_only() -> None:
    assert ROOT_TOOLS == (RUN_CODE, SUB_QUERY)
    assert not LOAD_CONTEXT.offered_to_root
    assert RUN_CODE.root_schema() == {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
    }
    assert SUB_QUERY.root_schema() == {
        "type": "object",
        "properties": {"prompt": {"type": "string"}, "context": {"type": "string"}},
        "required": ["prompt"],
    }


def test_the_hints_say_what_each_tool_does_to_the_world() -> None:
    assert (LOAD_CONTEXT.read_only, LOAD_CONTEXT.open_world) == (False, False)
    assert (RUN_CODE.destructive, RUN_CODE.open_world) == (False, False)
    assert SUB_QUERY.read_only is True
    assert ToolDeclaration("t", "d", ()).read_only is None  # not stated unless declared


def test_declarations_are_frozen() -> None:
    with pytest.raises(AttributeError):
        RUN_CODE.name = "exec"  # type: ignore[misc]
