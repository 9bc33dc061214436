"""Configuration for osup-mp: TOML file + environment overlay -> frozen dataclasses.

Sections mirror the seed's Elixir config (``[o_supervisor]`` is its application
env); ``[dev.*]`` / ``[prod.*]`` / ``[test.*]`` overlays (its dev/prod/test.exs)
are selected by ``--env`` / ``OSUP_ENV``.  Design decisions:

* Embedded defaults mirror the shipped ``config.toml`` (a test checks it), so the
  tool runs with no file.  Merge order: defaults <- file sections <- the file's
  ``[<env>.*]`` overlay <- ``overrides`` <- GERBIL_EXECUTABLE / GERBIL_HOME.
* Strict validation: unknown tables/keys are errors ("did you mean ..."), types
  are exact (a bool is not an int), every overlay is checked.  A ``ConfigError``
  is one line: file, dotted key the bad value came from (``dev.logger.level``
  for an overlay), what was expected and what was found.
* Relative paths resolve against the config file's directory (cwd without one),
  so two trees with two configs run side by side.
"""

from osup_mp.config.loader import (
    DEFAULT_ENV,
    ENVIRONMENTS,
    load_config,
    resolve_config_path,
    resolve_env,
)
from osup_mp.config.schema import LOG_LEVELS, MAX_FRAME_LIMIT, default_document
from osup_mp.config.sections import (
    AgentSection,
    Config,
    ConfigError,
    ControlSection,
    EvolutionSection,
    HealthSection,
    LoggerSection,
    OSupervisorSection,
    Strategy,
    SupervisorSection,
    TelemetrySection,
    VaultSection,
    WALSection,
    WatchdogSection,
)

__all__ = [
    "DEFAULT_ENV",
    "ENVIRONMENTS",
    "LOG_LEVELS",
    "MAX_FRAME_LIMIT",
    "AgentSection",
    "Config",
    "ConfigError",
    "ControlSection",
    "EvolutionSection",
    "HealthSection",
    "LoggerSection",
    "OSupervisorSection",
    "Strategy",
    "SupervisorSection",
    "TelemetrySection",
    "VaultSection",
    "WALSection",
    "WatchdogSection",
    "default_document",
    "load_config",
    "resolve_config_path",
    "resolve_env",
]
