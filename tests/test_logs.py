"""The tree's logging: records of forked children relayed through one pipe, tracebacks kept
out of the terminal and in the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from loguru import logger

from osup_mp.app.logs import LogRelay, configure_child, configure_parent
from osup_mp.config import load_config


@pytest.fixture
def relay():
    relay = LogRelay()
    yield relay
    logger.remove()
    relay.close()


def _in_a_child(relay: LogRelay, section, action) -> None:
    pid = os.fork()
    if pid == 0:  # a "child" of the tree: its records go through the relay
        try:
            configure_child(section, "unit")
            action()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_log_relay_reassembles_long_records(relay) -> None:
    section = load_config(None, "test").logger
    configure_parent(section, None, stderr=False, relay=relay)  # sinks before the fork
    _in_a_child(relay, section, lambda: logger.warning("x" * 10000))
    lines: list[str] = []
    logger.add(lines.append, format="{message}")
    relay.drain()
    text = "".join(lines)
    assert text.count("x") == 10000 and "unit" in text


def test_tracebacks_reach_the_file_and_never_the_terminal(relay, tmp_path: Path, capfd) -> None:
    section = load_config(None, "dev").logger
    log_file = tmp_path / "tree.log"
    configure_parent(section, log_file, stderr=True, relay=relay)

    def fail_in_child() -> None:
        secret = "local-value-7f3a"  # noqa: F841 - must never be printed (diagnose is off)
        try:
            raise RuntimeError("child boom")
        except RuntimeError:
            logger.exception("the child failed")

    _in_a_child(relay, section, fail_in_child)
    relay.drain()
    try:
        raise ValueError("parent boom")
    except ValueError:
        logger.exception("the parent failed")
    logger.remove()  # flushes the file
    err = capfd.readouterr().err
    assert "the child failed" in err and "the parent failed" in err
    assert "Traceback" not in err and "boom" not in err
    text = log_file.read_text()
    assert "RuntimeError: child boom" in text and "ValueError: parent boom" in text
    assert text.count("Traceback") == 2
    assert "local-value-7f3a" not in text
