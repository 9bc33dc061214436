"""Reading a configuration: resolve the file and env, merge the layers, validate, build.

Merge order: defaults <- file sections <- the file's ``[<env>.*]`` overlay <- ``overrides``
<- GERBIL_EXECUTABLE / GERBIL_HOME. Every error is one :class:`ConfigError` line naming the
file and the dotted key the bad value came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from osup_mp.config.schema import _PATH, _SCHEMA, default_document
from osup_mp.config.sections import _SECTION_TYPES, Config, ConfigError

ENVIRONMENTS: Final[tuple[str, ...]] = ("dev", "prod", "test")
DEFAULT_ENV: Final = "dev"
_ENV_VARS = {"GERBIL_EXECUTABLE": "gerbil_executable", "GERBIL_HOME": "gerbil_home"}


def _bad(file: str, key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(file, key, expected, f"expected {expected}, got {_fmt(value)}")


def _fmt(value: object) -> str:
    """Short, one-line, JSON-ish rendering of a bad value."""
    if isinstance(value, Mapping):
        return "a table"
    text = json.dumps(value, default=str, skipkeys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _unknown(file: str, key: str, known: Iterable[str], what: str) -> ConfigError:
    choices = list(known)
    expected = "one of " + ", ".join(choices)
    import difflib  # only on an error: not on every command's start-up

    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], choices, n=1)
    hint = f"did you mean {close[0]}?" if close else expected
    return ConfigError(file, key, expected, f"unknown {what} ({hint})")


# ----------------------------------------------------------------------- merging
class _Origin(NamedTuple):
    file: str  # path as given, "<defaults>", "<overrides>" or "<environment>"
    key: str  # dotted key (or variable name) as written in that source
    base: Path  # directory that relative paths from this source resolve against


_Values = dict[str, dict[str, tuple[Any, _Origin]]]


def _set(values: _Values, section: str, key: str, raw: object, origin: _Origin) -> None:
    field = _SCHEMA[section][key]
    try:
        value = field.convert(raw)
    except (TypeError, ValueError, KeyError):
        raise _bad(origin.file, origin.key, field.expected, raw) from None
    values.setdefault(section, {})[key] = (value, origin)


def _apply(values: _Values, table: Mapping[str, Any], src: _Origin) -> None:
    """Validate and merge a ``section -> key -> value`` table (src.key is a prefix)."""
    for section, body in table.items():
        where = f"{src.key}{section}"
        if section not in _SCHEMA:
            what = "table" if isinstance(body, Mapping) else "key"
            raise _unknown(src.file, where, _SCHEMA, what)
        if not isinstance(body, Mapping):
            raise _bad(src.file, where, "a table", body)
        for key, raw in body.items():
            dotted = f"{where}.{key}"
            if key not in _SCHEMA[section]:
                raise _unknown(src.file, dotted, _SCHEMA[section], "key")
            _set(values, section, key, raw, src._replace(key=dotted))


def _apply_document(
    values: _Values, doc: Mapping[str, Any], src: _Origin, env: str, overlay: bool = True
) -> None:
    """Merge a whole document: top-level sections, then the selected overlay (if ``overlay``;
    every overlay is validated either way)."""
    selected: Mapping[str, Any] | None = None
    for name, body in doc.items():
        if name in ENVIRONMENTS:
            if not isinstance(body, Mapping):
                raise _bad(src.file, name, "a table of overlay sections", body)
            _apply({}, body, src._replace(key=f"{name}."))  # every overlay is checked
            selected = body if name == env else selected
        elif name in _SCHEMA:
            _apply(values, {name: body}, src)
        else:
            what = "table" if isinstance(body, Mapping) else "key"
            raise _unknown(src.file, name, (*_SCHEMA, *ENVIRONMENTS), what)
    if selected is not None and overlay:
        _apply(values, selected, src._replace(key=f"{env}."))


# -------------------------------------------------------------------- resolution
def resolve_config_path(
    cli_path: str | None,
    environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
) -> Path | None:
    """``--config`` wins, then ``OSUP_CONFIG``, then ``./config.toml`` if present, else None."""
    if cli_path is not None:
        if not cli_path:
            raise _bad("--config", "config", "a non-empty path", cli_path)
        chosen = cli_path
    elif environ.get("OSUP_CONFIG"):
        chosen = environ["OSUP_CONFIG"]
    else:
        local = (cwd or Path()) / "config.toml"
        return local if local.is_file() else None
    path = Path(chosen).expanduser()
    return path if cwd is None or path.is_absolute() else cwd / path


def _check_env(env: str, file: str, key: str) -> str:
    if env not in ENVIRONMENTS:
        raise _bad(file, key, "one of " + ", ".join(ENVIRONMENTS), env)
    return env


def resolve_env(cli_env: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``--env`` wins, then ``OSUP_ENV``, else ``DEFAULT_ENV``."""
    if cli_env is not None:
        return _check_env(cli_env, "--env", "env")
    if environ.get("OSUP_ENV"):
        return _check_env(environ["OSUP_ENV"], "<environment>", "OSUP_ENV")
    return DEFAULT_ENV


def _resolve_path(raw: str, origin: _Origin) -> Path:
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # no home directory to expand "~" with
        expected = "a path whose ~ can be expanded"
        raise _bad(origin.file, origin.key, expected, raw) from None
    return Path(os.path.normpath(origin.base / path))


def _read(path: Path, shown: str) -> dict[str, Any]:
    import tomllib  # only when there is a file: a command run without one skips ~5 ms

    try:
        data = path.read_bytes()
    except OSError as exc:
        detail = f"cannot read config: {exc.strerror or exc}"
        raise ConfigError(shown, "", "a readable file", detail) from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        detail = f"invalid TOML: {exc}"
        raise ConfigError(shown, "", "valid TOML", detail) from None


def load_config(
    path: Path | str | None,
    env: str = DEFAULT_ENV,
    environ: Mapping[str, str] = os.environ,
    *,
    cwd: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    overlay: bool = True,
) -> Config:
    """Read, merge (defaults <- file <- ``[env.*]`` <- overrides <- env vars), validate.

    ``overlay=False`` leaves the ``[env.*]`` overlay out: the base values, which
    ``osup-mp config`` shows beside the keys an overlay changes.
    """
    _check_env(env, "<environment>", "env")
    workdir = Path(os.path.abspath(cwd if cwd is not None else Path.cwd()))
    values: _Values = {}
    if path is None:
        source, base = None, workdir
        src = _Origin("<defaults>", "", base)
        _apply_document(values, default_document(), src, env, overlay)
    else:
        shown = str(path)
        source = Path(os.path.normpath(workdir / Path(path).expanduser()))
        base = source.parent
        defaults = {k: v for k, v in default_document().items() if k in _SCHEMA}
        _apply(values, defaults, _Origin("<defaults>", "", base))
        _apply_document(values, _read(source, shown), _Origin(shown, "", base), env, overlay)
    if overrides:
        _apply(values, overrides, _Origin("<overrides>", "", base))
    for var, key in _ENV_VARS.items():
        if environ.get(var):
            origin = _Origin("<environment>", var, workdir)
            _set(values, "o_supervisor", key, environ[var], origin)
    return _build(values, env, source, base)


def _check_heartbeat(osup: dict[str, tuple[Any, _Origin]]) -> None:
    interval, i_origin = osup["heartbeat_interval"]
    timeout, t_origin = osup["heartbeat_timeout"]
    if timeout > interval:
        return
    if t_origin.file == "<defaults>" and i_origin.file != "<defaults>":
        # The user raised the interval past the default timeout: blame the interval.
        expected = f"less than heartbeat_timeout ({timeout})"
        raise _bad(i_origin.file, i_origin.key, expected, interval)
    expected = f"greater than heartbeat_interval ({interval})"
    raise _bad(t_origin.file, t_origin.key, expected, timeout)


def _build(values: _Values, env: str, source: Path | None, base: Path) -> Config:
    _check_heartbeat(values["o_supervisor"])
    kw = {name: {k: v for k, (v, _) in keys.items()} for name, keys in values.items()}
    for key, (raw, origin) in values["o_supervisor"].items():
        if _SCHEMA["o_supervisor"][key].expected == _PATH:
            kw["o_supervisor"][key] = _resolve_path(raw, origin)
        elif key.startswith("gerbil_") and "/" in raw:  # bare names are PATH lookups
            kw["o_supervisor"][key] = str(_resolve_path(raw, origin))
    sections = {name: cls(**kw[name]) for name, cls in _SECTION_TYPES.items()}
    overridden = {
        f"{name}.{key}": origin.key
        for name, keys in values.items()
        for key, (_value, origin) in keys.items()
        if origin.file == "<environment>" or origin.key.startswith(f"{env}.")
    }
    return Config(**sections, env=env, source=source, base_dir=base, overridden=overridden)
