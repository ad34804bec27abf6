"""The eval's tasks: the same seed makes the same input and answer, the checker takes the right answer in free
text and refuses a wrong one, and the fake sub-model reads only what its chunk holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rlm_mcp.evaluation import tasks

Maker = Callable[[Path, int, int], tasks.Task]
MAKERS: dict[str, tuple[Maker, int]] = {
    "niah": (tasks.make_niah, 30_000),
    "oolong": (tasks.make_oolong, 300),
    "pairs": (tasks.make_pairs, 80),
}


def made(tmp_path: Path, kind: str, seed: int, folder: str) -> tasks.Task:
    make, size = MAKERS[kind]
    directory = tmp_path / folder
    directory.mkdir(exist_ok=True)
    return make(directory, size, seed)


@pytest.mark.parametrize("kind", MAKERS)
def test_a_seed_makes_the_same_input_and_answer_and_another_seed_does_not(tmp_path: Path, kind: str) -> None:
    first, again, other = (made(tmp_path, kind, seed, folder) for seed, folder in ((7, "a"), (7, "b"), (8, "c")))
    assert first.file.read_bytes() == again.file.read_bytes() and first.expected == again.expected
    assert first.question == again.question and first.strategy == again.strategy
    assert first.file.read_bytes() != other.file.read_bytes()


def test_the_needle_is_in_the_input_once_at_its_depth(tmp_path: Path) -> None:
    task = tasks.make_niah(tmp_path, 30_000, seed=3, depth=0.25)
    text = task.file.read_text(encoding="utf-8")
    needle = f"NOTE: the secret code is {task.expected}\n"
    assert text.count("secret code") == 1 and len(task.expected) == 6
    assert abs(text.index(needle) - 7_500) < 200  # cut at the line boundary before 25% of 30,000 characters
    assert tasks.answer_niah(text) == task.expected and tasks.answer_niah("no needle here") == "none"


def test_the_niah_checker_wants_the_code_itself(tmp_path: Path) -> None:
    task = tasks.make_niah(tmp_path, 30_000, seed=3)
    code = task.expected
    assert task.check(f"The secret code is {code}.")
    assert not task.check("I could not find it.")
    assert not task.check(f"The secret code is {int(code) + 1}.")


def test_the_oolong_checker_wants_every_count_right(tmp_path: Path) -> None:
    task = tasks.make_oolong(tmp_path, 300, seed=5)
    counts = task.expected
    assert sum(counts.values()) == 300 and set(counts) <= {"positive", "negative", "neutral"}
    right = ", ".join(f"{label.title()}: {count}" for label, count in counts.items())
    assert task.check(right) and task.check(str(counts))
    wrong = dict(counts, positive=counts.get("positive", 0) + 1)
    assert not task.check(", ".join(f"{label}: {count}" for label, count in wrong.items()))
    assert not task.check(", ".join(f"{label}: {count}" for label, count in list(counts.items())[:-1]))


def test_the_fake_sub_model_counts_the_labels_of_its_chunk(tmp_path: Path) -> None:
    task = tasks.make_oolong(tmp_path, 300, seed=5)
    reply = tasks.answer("TASK oolong. Classify.\n" + task.file.read_text(encoding="utf-8"), None, "m")
    assert json.loads(reply) == task.expected


def test_the_pairs_checker_wants_exactly_the_pairs(tmp_path: Path) -> None:
    task = tasks.make_pairs(tmp_path, 80, seed=9)
    pairs = [tuple(pair) for pair in task.expected]
    assert pairs and all(a < b for a, b in pairs)
    shown = ", ".join(f"({b}, {a})" for a, b in pairs)  # either order in a pair
    assert task.check(f"The pairs are {shown}.")
    assert not task.check(", ".join(f"({a}, {b})" for a, b in pairs[:-1]))  # one missing
    extra = next((a, b) for a in range(80) for b in range(a + 1, 80) if (a, b) not in pairs)
    assert not task.check(f"{shown}, {extra}")  # one too many


def test_the_fake_sub_model_answers_only_the_benchmarks_tasks() -> None:
    assert tasks.answer("TASK niah. What is the code?\nthe secret code is 123456", None, "m") == "123456"
    assert tasks.answer("person 4 lives in Oslo, spends weekends on judo", None, "m").startswith("I can only")
    line = "TASK pairs.\nperson 4 lives in Oslo, spends weekends on judo, and caches a lot"
    assert tasks.answer(line, None, "m") == '{"id": 4, "city": "Oslo", "hobby": "judo"}'
