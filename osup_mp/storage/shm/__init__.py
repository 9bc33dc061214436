"""The shared-memory segment ``/o_shared_state``: layout, slots and the seqlock state region
(:mod:`.segment`), and its rendering for people (:mod:`.view`)."""
