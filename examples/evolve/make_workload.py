"""Write the example's data: ``memories.jsonl`` (memory_add requests, 20,000 by default) and
``workload.jsonl`` (memory_search requests, 100), of random words from a 500-word
vocabulary, seeded: ``python examples/evolve/make_workload.py [MEMORIES] [SEARCHES]``."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(memories: int = 20_000, searches: int = 100, seed: int = 7) -> None:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(500)]

    def words(n: int) -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(n))

    with open(HERE / "memories.jsonl", "w") as out:
        for i in range(memories):
            out.write(json.dumps({"op": "memory_add", "id": f"m{i}", "text": words(8)}) + "\n")
    with open(HERE / "workload.jsonl", "w") as out:
        for _ in range(searches):
            out.write(json.dumps({"op": "memory_search", "query": words(3), "k": 10}) + "\n")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
