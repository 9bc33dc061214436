"""The write-ahead log on disk: segments of checksummed records (:mod:`.store`, their format
in :mod:`.records`) and the fsync policies (:mod:`.sync`)."""
