"""The arbiter's memory: decided experiments, and the ones in flight, on disk.

``history.jsonl`` gets one JSON line per decided experiment (a later line for the same id,
such as a rollback, replaces the earlier one) and is compacted to the newest ``size``
records when it has grown to twice that. ``running.json`` lists the experiments in flight,
so that an arbiter restarted in the middle of one can close it and stop its shadows. The one
decision: appends are fsynced and a torn or corrupt line is skipped with a warning naming
the file and line, never a reason to refuse to start; a full disk costs the record on disk,
never the experiment.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from loguru import logger

from osup_mp.lowlevel.files import atomic_write, fsync_dir


class History:
    def __init__(self, directory: Path, size: int) -> None:
        self.dir = directory
        self.size = size
        self.file = directory / "history.jsonl"
        self.running_file = directory / "running.json"
        self.records: dict[str, dict[str, Any]] = {}  # id -> record, oldest first
        self._lines = 0

    def load(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            text = self.file.read_text(errors="replace")
        except FileNotFoundError:
            return
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                    raise ValueError("not an experiment record")
            except ValueError as exc:
                logger.warning("arbiter: {} line {} skipped: {}", self.file, number, exc)
                continue
            self.records.pop(record["id"], None)
            self.records[record["id"]] = record
            self._lines += 1
        self._trim()

    def add(self, record: dict[str, Any]) -> None:
        self.records.pop(record["id"], None)
        self.records[record["id"]] = record
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        try:
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._lines += 1
        except OSError as exc:
            logger.error(
                "arbiter: cannot record experiment {} in {}: {}", record["id"], self.file, exc
            )
        self._trim()

    def newest(self, n: int) -> list[dict[str, Any]]:
        return list(reversed(self.records.values()))[:n]

    def _trim(self) -> None:
        while len(self.records) > self.size:
            del self.records[next(iter(self.records))]
        if self._lines < 2 * self.size:
            return
        data = b"".join(
            json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in self.records.values()
        )
        try:
            atomic_write(self.file, data)
            self._lines = len(self.records)
        except OSError as exc:
            logger.error("arbiter: cannot compact {}: {}", self.file, exc)

    # -- experiments in flight ---------------------------------------------------------------

    def in_flight(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.running_file.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            logger.warning("arbiter: {} unreadable ({}): ignored", self.running_file, exc)
            return []
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def set_in_flight(self, entries: list[dict[str, Any]]) -> None:
        try:
            if entries:
                atomic_write(self.running_file, json.dumps(entries).encode())
            elif self.running_file.exists():
                self.running_file.unlink()
                fsync_dir(self.dir)
        except OSError as exc:
            logger.error("arbiter: cannot write {}: {}", self.running_file, exc)


def interrupted(entry: dict[str, Any]) -> dict[str, Any]:
    """The record of an experiment in flight when the arbiter stopped: a promotion being
    watched stands; anything else is inconclusive."""
    record = dict(entry)
    if record.get("state") != "watching" or record.get("verdict") != "promoted":
        record |= {"verdict": "inconclusive", "rule": "interrupted"}
        record["reason"] = "interrupted: the arbiter stopped while the experiment ran"
    record["state"] = "decided"
    record["decided_at"] = record.get("decided_at") or time.time()
    return record
