"""OS primitives: processes, the pidfile, the busy-poll spinner.

The bottom layer: it imports nothing from the rest of the package, so everything may use it
(agents included) without pulling in the tree.
"""
