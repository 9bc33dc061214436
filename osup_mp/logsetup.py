"""Logging for the whole tree with loguru: one stream, one rotated file, one writer.

Only the parent writes the log file and stderr. Children (and the agents they run, later)
send each formatted record through one shared pipe; writes of at most ``PIPE_BUF`` bytes are
atomic, so records from many processes never interleave, and rotation stays safe because
exactly one process owns the file. The parent relays records unformatted (``raw``), so the
text is formatted once, in the process that logged it, with its own component name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.config import LoggerSection

_RECORD_END = b"\x1e"
_FIELD_SEP = b"\x1f"
_CHUNK = 3800  # < PIPE_BUF (4096) with room for the level and separators


def _extra_defaults(section: LoggerSection, component: str) -> dict[str, Any]:
    extra: dict[str, Any] = {key: "" for key in section.metadata}
    extra["component"] = component
    return extra


def configure_parent(section: LoggerSection, log_file: Path | None, *, stderr: bool) -> None:
    """Sinks of the supervisor process: stderr (foreground) and the rotated file."""
    logger.remove()
    logger.configure(extra=_extra_defaults(section, "supervisor"))
    level = section.level.upper()
    if stderr:
        logger.add(sys.stderr, level=level, format=section.format, colorize=False)
    if log_file is not None:
        logger.add(
            log_file,
            level=level,
            format=section.format,
            rotation=section.rotation,
            retention=section.retention,
            encoding="utf-8",
        )


class LogRelay:
    """Parent side of the shared log pipe: re-emits children's records through its sinks."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._buf = bytearray()

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
            logger.opt(raw=True).log(level.decode(), text.decode("utf-8", "replace"))

    def close_read(self) -> None:
        os.close(self.read_fd)

    def close(self) -> None:
        self.drain()
        os.close(self.read_fd)
        os.close(self.write_fd)


def configure_child(section: LoggerSection, component: str, write_fd: int) -> None:
    """Sink of a forked child: formatted records into the shared pipe, in atomic chunks."""
    logger.remove()
    logger.configure(extra=_extra_defaults(section, component))

    def sink(message: Any) -> None:
        level = message.record["level"].name.encode()
        data = str(message).encode("utf-8", "replace")
        for start in range(0, len(data), _CHUNK):
            os.write(write_fd, level + _FIELD_SEP + data[start : start + _CHUNK] + _RECORD_END)

    logger.add(sink, level=section.level.upper(), format=section.format, colorize=False)
