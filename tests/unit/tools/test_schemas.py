"""The tools' structured results (rlm_mcp/tools/schemas.py): the contract a client relies on, kept compact."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rlm_mcp.tools.schemas import LoadResult, RunResult, SubCallUsage, SubQueryResult, VarInfo

MODELS = (VarInfo, LoadResult, SubCallUsage, SubQueryResult, RunResult)


def property_titles(schema: object) -> list[str]:
    """Every generated title of a property, anywhere in a schema (nested models included)."""
    found: list[str] = []
    if isinstance(schema, dict):
        for name, value in schema.get("properties", {}).items():
            if isinstance(value, dict) and "title" in value:
                found.append(name)
        for value in schema.values():
            found += property_titles(value)
    elif isinstance(schema, list):
        for value in schema:
            found += property_titles(value)
    return found


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_schemas_carry_no_per_field_titles(model: type) -> None:
    """Sent with every tools/list: "Stdout Chars" says nothing a field name does not, and costs tokens."""
    assert property_titles(model.model_json_schema()) == []


def test_private_state_stays_out_of_the_public_data() -> None:
    run = RunResult(outcome="ok", state="kept", elapsed_s=0.1, restored=["context"])
    run._deleted_contexts = ["context"]
    load = LoadResult(name="c", kind="str", source="a.txt", chars=1, lines=1, est_tokens=1, preview="a")
    load._more_findings = True
    assert "_deleted_contexts" not in run.model_dump() and "deleted_contexts" not in json.dumps(run.model_dump())
    assert "_more_findings" not in load.model_dump()


def test_a_run_result_with_an_earlier_cell_round_trips_through_json() -> None:
    earlier = RunResult(outcome="ok", state="kept", cell=1, stdout="done\n", elapsed_s=2.0)
    run = RunResult(
        outcome="error",
        state="kept",
        cell=2,
        error="ZeroDivisionError: division by zero",
        changed=[VarInfo(name="x", type="int", preview="1")],
        changed_total=1,
        elapsed_s=0.01,
        sub_calls=SubCallUsage(calls=2, cost_usd=0.5),
        finished_cell=earlier,
    )
    again = RunResult.model_validate_json(run.model_dump_json())
    assert again == run and again.finished_cell == earlier


@pytest.mark.parametrize(
    "fields",
    [
        {"outcome": "exploded", "state": "kept", "elapsed_s": 0},
        {"outcome": "ok", "state": "forgotten", "elapsed_s": 0},
        {"outcome": "ok", "state": "kept"},  # elapsed_s is always said
    ],
)
def test_an_outcome_or_state_outside_the_contract_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RunResult.model_validate(fields)


def test_defaults_are_empty_and_not_shared() -> None:
    first = RunResult(outcome="ok", state="kept", elapsed_s=0)
    second = RunResult(outcome="ok", state="kept", elapsed_s=0)
    first.notes.append("x")
    assert second.notes == [] and second.changed == [] and second.stdout == "" and second.result is None
    assert SubCallUsage().model_dump() == {
        "calls": 0,
        "failures": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "cache_hits": 0,
        "subscription_usd": 0.0,
    }
