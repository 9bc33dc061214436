"""The runtime core: channels, calls, the component base class and the root supervisor.

It knows no component: the application registers child specs with the supervisor.
"""
