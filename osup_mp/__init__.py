"""osup-mp: a single-host, multiprocessing supervisor for self-evolving agents.

An OTP-style supervision tree of real OS processes (see ``docs/``): the root supervisor in
:mod:`osup_mp.runtime.supervisor`, components built on :mod:`osup_mp.runtime.component`,
the agent wire codec in :mod:`osup_mp.wire`, and the ``osup-mp`` CLI in :mod:`osup_mp.cli`.
"""

__version__ = "0.1.0"
