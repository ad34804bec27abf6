"""Long-context tasks of the RLM literature, generated deterministically, with the code a root model would send.

Used by `rlm-mcp eval` (a real or scripted root model answers; `check` scores its answer) and by
bench/bench_tasks.py (the fixed strategies sent through the MCP client).

Each task has three parts:
- `make(directory, size, seed)`: writes the input file(s) and returns the question and the right answer;
- `STRATEGY`: the cells a competent root model sends through `run_code` (fixed here, so the benchmark
  measures the server, not a model's luck), ending with the answer in a variable `answer`;
- `answer_chunk(prompt)`: the fake sub-model's reply to one sub-call, computed from the chunk it was given
  (as a real model would read it), so the result is right only if the chunks reached it intact.

Tasks: S-NIAH (a needle at a chosen depth in N characters), OOLONG-style aggregation (classify thousands of
records and count the labels), and pairs (which records relate: same city and same hobby).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORDS = [
    "request",
    "user",
    "cache",
    "miss",
    "db",
    "retry",
    "ok",
    "id",
    "latency",
    "queue",
    "worker",
    "shard",
    "index",
    "token",
    "page",
]
LABEL_WORDS = {
    "positive": ["great", "love", "excellent", "happy"],
    "negative": ["awful", "hate", "broken", "angry"],
    "neutral": ["fine", "okay", "average", "plain"],
}
CITIES = ["Lyon", "Oslo", "Quito", "Perth", "Dakar", "Hanoi", "Lima", "Graz"]
HOBBIES = ["chess", "rowing", "pottery", "birding", "judo", "origami", "tango", "fencing"]


@dataclass
class Task:
    name: str
    file: Path
    question: str
    expected: Any
    strategy: list[str]

    def check(self, answer: str) -> bool:
        """Whether a free-text answer is right: the code, the three counts, or exactly the pairs."""
        if isinstance(self.expected, str):
            return self.expected in answer
        if isinstance(self.expected, dict):
            found = {label: re.search(rf"{label}\W{{0,4}}(\d+)", answer, re.IGNORECASE) for label in self.expected}
            return all(match is not None and int(match.group(1)) == self.expected[label]
                       for label, match in found.items())  # fmt: skip
        pairs = {tuple(sorted((int(a), int(b)))) for a, b in re.findall(r"\((\d+),\s*(\d+)\)", answer)}
        return pairs == {tuple(pair) for pair in self.expected}


# -- S-NIAH -------------------------------------------------------------------------------------------------

NIAH_STRATEGY = [
    "hits = grep(r'secret code', context, max_hits=5)\nlen(hits)",
    # Hand the sub-model a window around each hit rather than the whole text, as a careful root would.
    "windows = [peek(context, max(0, h['start'] - 300), 600) for h in hits]\n"
    "replies = llm_query_batched([f'TASK niah. What is the secret code?\\n{w}' for w in windows])\n"
    "answer = next((r for r in replies if isinstance(r, str) and r.strip().isdigit()), 'not found')\nanswer",
]


# At depth 2: the input cut into a few large pieces, each searched by a child RLM with the strategy above.
NIAH_CHILD_QUESTION = "Find the secret code in this piece; answer with its digits only, or 'not found'."
NIAH_RECURSIVE_STRATEGY = [
    "pieces = chunk(context, min(8_000_000, len(context) // 2 + 1))\n"
    f"replies = rlm_query_batched([{NIAH_CHILD_QUESTION!r}] * len(pieces), pieces)\n"
    "answer = next((r for r in replies if isinstance(r, str) and r.strip().isdigit()), 'not found')\nanswer",
]


def make_niah(directory: Path, chars: int, seed: int, depth: float = 0.6) -> Task:
    rng = random.Random(seed)
    code = f"{rng.randrange(10**5, 10**6)}"
    line_block = "".join(
        f"2024-06-01T12:{i % 60:02d}:00Z INFO svc-{i % 40} {' '.join(rng.choice(WORDS) for _ in range(8))}\n"
        for i in range(2000)
    )
    path = directory / f"niah-{chars}.txt"
    needle = f"NOTE: the secret code is {code}\n"
    at = int(chars * depth)
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < chars:
            piece = line_block[: chars - written]
            if written <= at < written + len(piece):
                cut = piece.rfind("\n", 0, at - written) + 1
                piece = piece[:cut] + needle + piece[cut:]
            handle.write(piece)
            written += len(piece)
    return Task("S-NIAH", path, "What is the secret code?", code, NIAH_STRATEGY)


def answer_niah(prompt: str) -> str:
    found = re.search(r"secret code is (\d+)", prompt)
    return found.group(1) if found else "none"


# -- OOLONG-style aggregation ---------------------------------------------------------------------------------

OOLONG_STRATEGY = [
    "chunks = chunk(context, 200, by='lines')\nlen(chunks)",
    "replies = llm_query_batched([\n"
    "    'TASK oolong. Classify the sentiment of every record as positive, negative or neutral; '\n"
    "    'reply with JSON counts.\\n' + c for c in chunks])\n"
    "import json, collections\n"
    "totals = collections.Counter()\n"
    "for r in replies:\n"
    "    totals.update(json.loads(r))\n"
    "answer = dict(sorted(totals.items()))\nanswer",
]


def make_oolong(directory: Path, records: int, seed: int) -> Task:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    lines = []
    for number in range(records):
        label = rng.choice(list(LABEL_WORDS))
        counts[label] += 1
        filler = " ".join(rng.choice(WORDS) for _ in range(6))
        lines.append(
            f"record {number} | user u{rng.randrange(500)} | {filler} {rng.choice(LABEL_WORDS[label])} {filler}\n"
        )
    path = directory / f"oolong-{records}.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return Task(
        "OOLONG counts",
        path,
        "How many records are positive, negative, neutral?",
        dict(sorted(counts.items())),
        OOLONG_STRATEGY,
    )


def answer_oolong(prompt: str) -> str:
    counts: Counter[str] = Counter()
    for line in prompt.splitlines():
        if line.startswith("record "):
            words = set(line.split())
            for label, cues in LABEL_WORDS.items():
                if words & set(cues):
                    counts[label] += 1
    return json.dumps(counts)


# -- pairs ------------------------------------------------------------------------------------------------

PAIRS_STRATEGY = [
    "chunks = chunk(context, 100, by='lines')\nlen(chunks)",
    "replies = llm_query_batched([\n"
    "    'TASK pairs. For each person give id, city and hobby as JSON lines.\\n' + c for c in chunks])\n"
    "import json, itertools, collections\n"
    "people = [json.loads(line) for r in replies for line in r.splitlines() if line.strip()]\n"
    "groups = collections.defaultdict(list)\n"
    "for p in people:\n"
    "    groups[(p['city'], p['hobby'])].append(p['id'])\n"
    "answer = sorted(tuple(sorted(pair)) for ids in groups.values() for pair in itertools.combinations(ids, 2))\n"
    "len(answer)",
]


def make_pairs(directory: Path, people: int, seed: int) -> Task:
    rng = random.Random(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    lines = []
    for number in range(people):
        city, hobby = rng.choice(CITIES), rng.choice(HOBBIES)
        groups.setdefault((city, hobby), []).append(number)
        lines.append(f"person {number} lives in {city}, spends weekends on {hobby}, and {rng.choice(WORDS)}s a lot\n")
    path = directory / f"pairs-{people}.txt"
    path.write_text("".join(lines), encoding="utf-8")
    expected = sorted((a, b) for ids in groups.values() for i, a in enumerate(ids) for b in ids[i + 1 :])
    return Task("pairs", path, "Which people share both city and hobby?", expected, PAIRS_STRATEGY)


def answer_pairs(prompt: str) -> str:
    found = re.findall(r"person (\d+) lives in (\w+), spends weekends on (\w+)", prompt)
    return "\n".join(json.dumps({"id": int(i), "city": c, "hobby": h}) for i, c, h in found)


def answer(prompt: str, system: str | None, model: str) -> str:
    """The fake sub-model: dispatches on the task tag the strategies put in front of each chunk."""
    if prompt.startswith("TASK niah"):
        return answer_niah(prompt)
    if prompt.startswith("TASK oolong"):
        return answer_oolong(prompt)
    if prompt.startswith("TASK pairs"):
        return answer_pairs(prompt)
    return "I can only answer the benchmark's tasks."
