"""The agent SDK: build agents that osup-mp supervises (see :class:`osup_mp.agent.sdk.Agent`).

Agents import only this package, the wire codec and the shared-memory layout — never the
supervisor side — so they start fast: an agent's start-up time is its restart time.
"""

from osup_mp.agent.sdk import Agent, AgentOptions, RequestError

__all__ = ["Agent", "AgentOptions", "RequestError"]
