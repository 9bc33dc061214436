"""The example hypotheses in ``examples/hypotheses/``, loaded the way the agent hot-reloads
them (its own compile, self-test and swap), answer as their docstrings say: the faster,
slower, leaky and A/A ones exactly as the shipped code, the wrong one differently, the
broken one not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from osup_mp.agent.reference.agent import MemoryAgent
from osup_mp.agent.sdk import AgentOptions, accepted_keywords

pytestmark = pytest.mark.unit

HYPOTHESES = Path(__file__).resolve().parent.parent / "examples" / "hypotheses"
SAME_ANSWERS = ("faster_search", "slower_search", "leaky_search", "same")


def _agent() -> MemoryAgent:
    """A reference agent with 2,000 memories, some with unnormalised embeddings, one gone."""
    agent = MemoryAgent(AgentOptions())
    rng = np.random.default_rng(5)
    for i in range(2000):
        block: dict[str, Any] = {"id": f"b{i}", "text": f"note {i} about topic {i % 37}"}
        if i % 10 == 0:
            block["embedding"] = (rng.standard_normal(64) * rng.uniform(0.1, 9)).tolist()
        agent.op_memory_add(block)
    agent.op_memory_delete({"id": "b7"})
    return agent


def _answers(agent: MemoryAgent) -> list[Any]:
    return [agent.op_memory_search({"query": f"topic {i}", "k": 5}) for i in range(37)]


@pytest.fixture(scope="module")
def baseline() -> list[Any]:
    return _answers(_agent())


def _reload(agent: MemoryAgent, name: str) -> dict[str, Any]:
    return agent._reload("memory_system", (HYPOTHESES / f"{name}.py").read_text())


@pytest.mark.parametrize("name", SAME_ANSWERS)
def test_a_same_answers_hypothesis_loads_and_answers_as_the_shipped_code(
    name: str, baseline: list[Any]
) -> None:
    agent = _agent()
    assert _reload(agent, name) == {"ok": True}
    assert _answers(agent) == baseline


def test_the_faster_search_uses_the_norms_the_agent_keeps() -> None:
    agent = _agent()
    _reload(agent, "faster_search")
    assert "norms" in accepted_keywords(agent.modules["memory_system"].search)
    matrix = agent.matrix.current(agent.blocks)
    assert np.array_equal(agent.matrix.norms(), np.linalg.norm(matrix, axis=1))


def test_the_wrong_search_answers_differently(baseline: list[Any]) -> None:
    agent = _agent()
    assert _reload(agent, "wrong_search") == {"ok": True}
    differing = sum(a != b for a, b in zip(_answers(agent), baseline, strict=True))
    assert differing == len(baseline)


def test_the_broken_hypothesis_is_refused_and_the_agent_keeps_its_code(
    baseline: list[Any],
) -> None:
    agent = _agent()
    result = _reload(agent, "broken")
    assert result["ok"] is False and "memory_system_helpers" in result["error"]
    assert _answers(agent) == baseline


def test_the_leaky_search_keeps_memory_on_every_search() -> None:
    agent = _agent()
    _reload(agent, "leaky_search")
    kept = agent.modules["memory_system"]._KEPT
    before = len(kept)  # the agent's self-test searched once
    _answers(agent)
    assert len(kept) - before == 37 and all(len(chunk) == 8 << 20 for chunk in kept)


def test_new_code_that_raises_is_rolled_back_and_the_call_retried_without_its_keywords(
    baseline: list[Any],
) -> None:
    """A reloaded search taking ``norms`` raises: the shipped one, which takes no
    ``norms``, answers the same request."""
    agent = _agent()
    code = (HYPOTHESES / "faster_search.py").read_text()
    code += (  # passes the self-test (3 rows), raises on real data
        "\n\n_fast = search\n\n\ndef search(matrix, query, k, norms=None):\n"
        "    if len(matrix) > 3:\n        raise RuntimeError('boom')\n"
        "    return _fast(matrix, query, k, norms)\n"
    )
    assert agent._reload("memory_system", code) == {"ok": True}
    assert _answers(agent) == baseline
    assert "norms" not in accepted_keywords(agent.modules["memory_system"].search)
