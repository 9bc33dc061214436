"""The write-ahead log on disk: segments of checksummed records (:mod:`.store`) and the
fsync policies (:mod:`.sync`)."""
