"""The tree's children, one module or package each: telemetry, health, vault, wal, watchdog,
the agent manager (``agent``) and the traffic splitter.

Components never import one another: they talk by typed messages (:mod:`.messages`)
through peers the supervisor brokers. Only :mod:`osup_mp.app` knows them all.
"""
