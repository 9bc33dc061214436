"""The application: the only package that knows every component.

:mod:`.tree` runs a tree (directories, pidfile, logging, control socket, children);
:mod:`.logs` is its logging set-up and log relay. Only the CLI imports this package.
"""
