"""The pytest plugin of the suite (``-p support.plugin`` in pyproject.toml): the fixtures
every test may use and the leak check every test gets."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.leaks import check_leaks
from support.trees import Tree, write_config


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
