"""What the tests share, loaded as a pytest plugin (:mod:`.plugin`): deadline polling, the
leak check, trees under test, and the test agents and components (run as scripts by path).
"""

from support.leaks import gone, tagged_processes
from support.polling import wait_for
from support.trees import (
    AGENTS_DIR,
    FAULTY_TREE,
    SCRIPTED_AGENT,
    SUPPORT_DIR,
    TESTS_DIR,
    TREE_MAIN,
    Tree,
    write_config,
)

__all__ = [
    "AGENTS_DIR",
    "FAULTY_TREE",
    "SCRIPTED_AGENT",
    "SUPPORT_DIR",
    "TESTS_DIR",
    "TREE_MAIN",
    "Tree",
    "gone",
    "tagged_processes",
    "wait_for",
    "write_config",
]
