"""Logging for the whole tree with loguru: one stream, one rotated file, one writer.

Only the parent writes the log file and stderr. Children send each formatted record through
one shared pipe; writes of at most ``PIPE_BUF`` bytes are atomic, so records from many
processes never interleave, and rotation stays safe because exactly one process owns the
file. The parent relays records unformatted (``raw``), so the text is formatted once, in the
process that logged it, with its own component name.

Design decision: every sink is added once, in the parent, before anything forks, each with a
filter on the current pid (parent sinks pass the parent's records, the pipe sink everyone
else's). A child then only renames itself: ``logger.add`` costs milliseconds, and paying
that in every forked child would sit on the restart path.

Tracebacks go to the log file only: an operator's terminal gets one line per record. A
relayed record therefore carries its traceback apart from its line, and no sink prints the
values of local variables (``diagnose``), which may hold data that does not belong in logs.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.config import LoggerSection

_RECORD_END = b"\x1e"
_FIELD_SEP = b"\x1f"
_CHUNK = 3800  # < PIPE_BUF (4096) with room for the level and separators
_TRACEBACK = b"tb:"  # a relayed record's level prefix: its traceback, for the file only


def _traceback_text(record: Any) -> str:
    exc = record["exception"]
    return "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))


def _extra_defaults(section: LoggerSection, component: str) -> dict[str, Any]:
    extra: dict[str, Any] = {key: "" for key in section.metadata}
    extra["component"] = component
    return extra


class LogRelay:
    """The shared log pipe: children write records in, the parent re-emits them."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._buf = bytearray()

    def sink(self, message: Any) -> None:
        """A child's sink: formatted records into the pipe, in atomic chunks (the sink's
        format leaves the traceback out: it travels as a record of its own, file-only)."""
        record = message.record
        level = record["level"].name.encode()
        self._send(level, str(message))
        if record["exception"] is not None:
            self._send(_TRACEBACK + level, _traceback_text(record))

    def _send(self, level: bytes, text: str) -> None:
        data = text.encode("utf-8", "replace")
        for start in range(0, len(data), _CHUNK):
            chunk = level + _FIELD_SEP + data[start : start + _CHUNK] + _RECORD_END
            os.write(self.write_fd, chunk)

    def drain(self) -> None:
        try:
            while chunk := os.read(self.read_fd, 65536):
                self._buf += chunk
        except BlockingIOError:
            pass
        *records, rest = self._buf.split(_RECORD_END)
        self._buf = bytearray(rest)
        for record in records:
            level, _, text = record.partition(_FIELD_SEP)
            where = "file" if level.startswith(_TRACEBACK) else "all"
            logger.opt(raw=True).bind(sinks=where).log(
                level.removeprefix(_TRACEBACK).decode(), text.decode("utf-8", "replace")
            )

    def close_read(self) -> None:
        os.close(self.read_fd)

    def close(self) -> None:
        self.drain()
        os.close(self.read_fd)
        os.close(self.write_fd)


def configure_parent(
    section: LoggerSection,
    log_file: Path | None,
    *,
    stderr: bool,
    relay: LogRelay | None = None,
) -> None:
    """All sinks, before any fork: stderr and the rotated file for this process's records,
    the relay pipe for records of processes forked from it."""
    logger.remove()
    logger.configure(extra=_extra_defaults(section, "supervisor"))
    level = section.level.upper()
    parent = os.getpid()

    def here(record: Any) -> bool:
        return os.getpid() == parent

    def terminal(record: Any) -> bool:
        return os.getpid() == parent and record["extra"].get("sinks") != "file"

    one_line = section.format + "\n"  # a callable format: loguru appends no traceback

    if stderr:
        logger.add(
            sys.stderr,
            level=level,
            format=lambda _record: one_line,
            colorize=False,
            filter=terminal,
            diagnose=False,
        )
    if log_file is not None:
        logger.add(
            log_file,
            level=level,
            format=section.format,
            rotation=section.rotation,
            retention=section.retention,
            encoding="utf-8",
            filter=here,
            diagnose=False,
            backtrace=False,
        )
    if relay is not None:
        logger.add(
            relay.sink,
            level=level,
            format=lambda _record: one_line,
            colorize=False,
            filter=lambda record: os.getpid() != parent,
        )


def configure_child(section: LoggerSection, component: str) -> None:
    """In a forked child: records now carry the component's name (the sinks are inherited)."""
    logger.configure(extra=_extra_defaults(section, component))
