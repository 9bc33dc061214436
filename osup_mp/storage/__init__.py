"""Durable and shared state as libraries: the WAL (``wal``), checkpoint files and rows
(``checkpoints``) and the shared-memory segment (``shm``).

No component and no config section lives here: the components wrap these libraries, and the
offline tools (``tools/wal_dump.py``, ``tools/shm_dump.py``) use them directly.
"""
