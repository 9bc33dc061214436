"""What an agent declares and proposes: read-only operations in ``ready``, and an
``evolution_intent`` answered by an ``evolution_result`` that carries its id."""

from __future__ import annotations

import json
import sys

from support import SCRIPTED_AGENT, wait_for


def test_the_reference_agent_declares_its_read_only_operations(make_tree) -> None:
    tree = make_tree().start()
    main = wait_for(tree.running_agent, what="the main agent")
    assert main["read_only"] == ["memory_get", "memory_search", "stats", "tool_list"]


def test_a_proposal_becomes_an_experiment_answered_with_its_id(make_tree) -> None:
    tree = make_tree(
        o_supervisor={
            "gerbil_executable": sys.executable,
            "gerbil_main_script": str(SCRIPTED_AGENT),
            "evolution_enabled": True,
            "max_concurrent_shadows": 2,
        },
        evolution={"calibration": 0},  # no traffic to calibrate on: straight to the code
    ).start()
    assert wait_for(tree.running_agent)["read_only"] == ["count", "peek"]
    proposal = tree.agent_request({"do": "propose"})
    result = wait_for(lambda: tree.agent_request({"do": "last_result"}), what="the result")
    assert result["id"] == proposal and result["type"] == "evolution_result"
    # The scripted agent has no module memory_system: the candidate cannot load it.
    assert result["success"] is False and result["verdict"] == "rejected"
    assert "no reloadable module 'memory_system'" in result["reason"]
    assert f"evolution intent {proposal} for 'memory_system'" in tree.log_text
    shown = json.loads(tree.cli("experiment", "show", result["experiment"], "--json").stdout)
    assert shown["origin"] == "main" and shown["rule"] == "load_failed"
    assert shown["hypothesis"] == "a test proposal"


def test_a_proposal_is_refused_at_once_when_evolution_is_off(make_tree) -> None:
    tree = make_tree(
        o_supervisor={
            "gerbil_executable": sys.executable,
            "gerbil_main_script": str(SCRIPTED_AGENT),
            "evolution_enabled": False,
        }
    ).start()
    proposal = tree.agent_request({"do": "propose"})
    result = wait_for(lambda: tree.agent_request({"do": "last_result"}), what="the result")
    assert result["id"] == proposal and result["success"] is False
    assert result["verdict"] is None and "evolution is disabled" in result["error"]
