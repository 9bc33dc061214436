"""The pytest plugin of the suite (``-p support.plugin`` in pyproject.toml): the fixtures
every test may use and the leak check every test gets."""

from __future__ import annotations

import compileall
import itertools
import json
import os
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

import osup_mp
from support.leaks import check_leaks
from support.trees import SUPPORT_DIR, Tree, write_config

# Bytecode: with writing it off (PYTHONDONTWRITEBYTECODE), every one of the hundreds of
# Python processes the suite starts (trees, CLI commands, agents) would compile the package
# from source again (about 0.15 s of CPU for a tree), and pytest would rewrite every test
# module again at each collection (about 2 s). The suite caches the bytecode of its own
# files where Python would (``__pycache__``, ignored by git): the package and the support
# code once per session (only what changed), the test modules as pytest collects them.


def pytest_configure(config: pytest.Config) -> None:
    if sys.flags.dont_write_bytecode:
        for directory in (Path(osup_mp.__file__).parent, SUPPORT_DIR):
            compileall.compile_dir(directory, quiet=2)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    forbidden, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = forbidden


TREES = pytest.StashKey[list[Tree]]()
_LOG_TAIL = 60  # lines of each tree's log shown with a failure


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the newest lines of the log of every tree it made:
    what the tree saw is what explains a failure in a run nobody watched."""
    report = yield
    if report.failed and call.when == "call":
        for n, tree in enumerate(item.stash.get(TREES, [])):
            tail = "\n".join(tree.log_text.splitlines()[-_LOG_TAIL:])
            report.sections.append((f"log of tree {n} (newest {_LOG_TAIL} lines)", tail))
    return report


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def no_leaks(tag: str) -> Iterator[None]:
    shm_before = set(os.listdir("/dev/shm"))
    yield
    check_leaks(tag, shm_before)


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Tree]]:
    """``shared_tree(*children, **sections)``: a running tree of that config (the shipped
    one, or test components: see :meth:`Tree.start`), shared by the tests of a module that
    only need one running (a tree costs about a second to start).

    Each test gets it settled (see :meth:`Tree.settled`; one that is not, after whatever the
    previous test did, is replaced by a fresh one) and its ``log_text`` from where it
    begins. The trees carry a tag of their own, checked for leaks after the module.
    """
    tag = uuid.uuid4().hex[:12]
    shm_before = set(os.listdir("/dev/shm"))
    trees: dict[str, Tree] = {}
    started = itertools.count()

    def get(*children: str, **sections: dict[str, Any]) -> Tree:
        key = json.dumps([children, sections], sort_keys=True)
        tree = trees.get(key)
        if tree is not None and not tree.settled():
            tree.stop()
            tree = None
        if tree is None:
            name = f"/osup_test_{tag}_{next(started)}"  # each its own segment
            osup = {**sections.get("o_supervisor", {}), "shared_memory_name": name}
            directory = tmp_path_factory.mktemp("shared-tree")
            tree = Tree(write_config(directory, tag, **{**sections, "o_supervisor": osup}), tag)
            trees[key] = tree.start(*children)
        tree.log_offset = tree.log_size()
        return tree

    yield get
    for tree in trees.values():
        tree.stop()
    check_leaks(tag, shm_before)


@pytest.fixture
def make_tree(
    tmp_path: Path, tag: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Tree]]:
    trees: list[Tree] = []
    request.node.stash[TREES] = trees

    def make(subdir: str = "tree", **sections: dict[str, Any]) -> Tree:
        directory = tmp_path / subdir
        directory.mkdir()
        tree = Tree(write_config(directory, tag, **sections), tag)
        trees.append(tree)
        return tree

    yield make
    for tree in trees:
        tree.stop()
