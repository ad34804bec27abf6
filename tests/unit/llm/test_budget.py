"""The budget at its edges: reservations admit exactly the calls that fit, never one more or one fewer."""

from __future__ import annotations

import pytest

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.budget import Budget


def test_a_token_budget_admits_calls_up_to_exactly_its_limit() -> None:
    budget = Budget(max_calls=100, max_tokens=300, max_cost=None)
    reservations = [budget.reserve(100, None) for _ in range(3)]  # 300 of 300: all fit
    with pytest.raises(SubCallError, match="token budget exhausted"):
        budget.reserve(1, None)
    for reservation in reservations:
        budget.settle(reservation, 100, None)
    assert budget.tokens == 300 and budget.exhausted() is not None


def test_a_dollar_budget_admits_calls_up_to_exactly_its_limit_despite_float_sums() -> None:
    budget = Budget(max_calls=100, max_tokens=None, max_cost=0.3)
    for _ in range(3):  # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats; the third call still fits
        budget.settle(budget.reserve(10, 0.1), 10, 0.1)
    with pytest.raises(SubCallError, match="money budget exhausted"):
        budget.reserve(10, 0.001)
    assert budget.calls == 3


def test_a_call_budget_admits_exactly_its_number_of_calls() -> None:
    budget = Budget(max_calls=2, max_tokens=None, max_cost=None)
    budget.reserve(1, None)
    budget.reserve(1, None)
    with pytest.raises(SubCallError, match="sub-call budget exhausted"):
        budget.reserve(1, None)


def test_concurrent_reservations_count_against_the_limit_before_they_settle() -> None:
    budget = Budget(max_calls=100, max_tokens=250, max_cost=None)
    budget.reserve(100, None)
    budget.reserve(100, None)
    with pytest.raises(SubCallError):
        budget.reserve(100, None)  # 300 reserved would pass 250, though nothing has been spent yet
