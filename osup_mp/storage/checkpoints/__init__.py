"""Checkpoint storage: checksummed, atomically written files beside a bytes-only diskcache
(:mod:`.store`)."""
