"""What an agent declares and proposes: read-only operations in ``ready``, and an
``evolution_intent`` answered by an ``evolution_result`` that carries its id."""

from __future__ import annotations

import sys

from support import SCRIPTED_AGENT, wait_for


def test_the_reference_agent_declares_its_read_only_operations(make_tree) -> None:
    tree = make_tree().start()
    main = wait_for(tree.running_agent, what="the main agent")
    assert main["read_only"] == ["memory_get", "memory_search", "stats", "tool_list"]


def test_a_proposal_is_answered_with_its_id(make_tree) -> None:
    tree = make_tree(
        o_supervisor={
            "gerbil_executable": sys.executable,
            "gerbil_main_script": str(SCRIPTED_AGENT),
        }
    ).start()
    assert wait_for(tree.running_agent)["read_only"] == ["count", "peek"]
    proposal = tree.agent_request({"do": "propose"})
    result = wait_for(lambda: tree.agent_request({"do": "last_result"}), what="the result")
    assert result["id"] == proposal and result["type"] == "evolution_result"
    assert result["success"] is False and "not available" in result["error"]
    assert f"evolution intent {proposal} for 'memory_system'" in tree.log_text
