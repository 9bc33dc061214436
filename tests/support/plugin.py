"""The pytest plugin of the suite (``-p support.plugin`` in pyproject.toml): the fixtures
every test may use and the leak check every test gets."""

from __future__ import annotations

import compileall
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


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def no_leaks(tag: str) -> Iterator[None]:
    shm_before = set(os.listdir("/dev/shm"))
    yield
    check_leaks(tag, shm_before)


@pytest.fixture
def make_tree(tmp_path: Path, tag: str) -> Iterator[Callable[..., Tree]]:
    trees: list[Tree] = []

    def make(subdir: str = "tree", **sections: dict[str, Any]) -> Tree:
        directory = tmp_path / subdir
        directory.mkdir()
        tree = Tree(write_config(directory, tag, **sections), tag)
        trees.append(tree)
        return tree

    yield make
    for tree in trees:
        tree.stop()
