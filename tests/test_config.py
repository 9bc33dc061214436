"""Tests for osup_mp.config: defaults, overlays, path resolution and strict validation."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import tomllib
from pathlib import Path

import pytest

from osup_mp.config import (
    DEFAULT_ENV,
    ENVIRONMENTS,
    Config,
    ConfigError,
    Strategy,
    default_document,
    load_config,
    resolve_config_path,
    resolve_env,
)

pytestmark = pytest.mark.unit  # no process started

SHIPPED = Path(__file__).resolve().parent.parent / "config.toml"
NO_ENV: dict[str, str] = {}


def write(directory: Path, text: str, name: str = "config.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: str = "dev") -> Config:
    return load_config(str(write(tmp_path, text)), env, NO_ENV)


# ------------------------------------------------------------------ defaults
def test_defaults_without_file(tmp_path: Path) -> None:
    cfg = load_config(None, "dev", NO_ENV, cwd=tmp_path)
    osup = cfg.o_supervisor
    assert cfg.env == "dev" and cfg.source is None and cfg.base_dir == tmp_path
    assert osup.gerbil_executable == "osup-mp-agent"
    assert osup.gerbil_main_script == ""
    assert osup.gerbil_home == Path("/usr/local/gerbil")
    assert osup.data_dir == tmp_path / "data"
    assert osup.checkpoint_dir == tmp_path / "data" / "checkpoints"
    assert osup.wal_dir == tmp_path / "data" / "wal"
    assert osup.run_dir == tmp_path / "data" / "run"
    assert osup.shared_memory_name == "/o_shared_state"
    assert osup.shared_memory_size == 1048576
    assert (osup.heartbeat_interval, osup.heartbeat_timeout) == (1000, 5000)
    assert osup.shadow_test_duration == 300000
    assert osup.max_concurrent_shadows == 10  # dev has no overlay: the base values run
    assert osup.evolution_enabled is True
    assert cfg.logger.level == "info"
    assert cfg.logger.metadata == ("request_id", "module", "function")
    assert cfg.logger.rotation == "10 MB" and cfg.logger.retention == 5
    assert cfg.supervisor.strategy is Strategy.ONE_FOR_ONE
    assert cfg.supervisor.max_restarts == 3
    assert cfg.supervisor.max_seconds == 5.0 and isinstance(cfg.supervisor.max_seconds, float)
    assert cfg.supervisor.shutdown_timeout == 5000
    assert cfg.telemetry.period == 10000
    assert cfg.control.max_frame == 1048576
    assert cfg.pidfile == tmp_path / "data" / "run" / "osup-mp.pid"
    assert cfg.control_socket == tmp_path / "data" / "run" / "control.sock"
    assert cfg.log_file == tmp_path / "data" / "logs" / "osup-mp.log"


def test_default_env_is_dev(tmp_path: Path) -> None:
    assert DEFAULT_ENV == "dev" and ENVIRONMENTS == ("dev", "prod", "test")
    assert load_config(None, environ=NO_ENV, cwd=tmp_path).env == "dev"


def test_shipped_document_equals_embedded_defaults() -> None:
    with SHIPPED.open("rb") as fh:
        assert tomllib.load(fh) == default_document()


@pytest.mark.parametrize(
    ("env", "level", "shadows", "evolution"),
    [
        ("dev", "info", 10, True),
        ("prod", "info", 20, True),
        ("test", "warning", 2, False),
    ],
)
def test_shipped_file_equals_defaults_per_env(
    env: str, level: str, shadows: int, evolution: bool
) -> None:
    from_file = load_config(SHIPPED, env, NO_ENV)
    embedded = load_config(None, env, NO_ENV, cwd=SHIPPED.parent)
    assert from_file.source == SHIPPED
    assert dataclasses.replace(from_file, source=None) == embedded
    assert from_file.logger.level == level
    assert from_file.o_supervisor.max_concurrent_shadows == shadows
    assert from_file.o_supervisor.evolution_enabled is evolution


def test_default_document_is_a_copy() -> None:
    doc = default_document()
    doc["logger"]["level"] = "error"
    assert default_document()["logger"]["level"] == "info"


# ------------------------------------------------------------ env selection
def test_env_selected_by_argument(tmp_path: Path) -> None:
    assert load_config(None, "prod", NO_ENV, cwd=tmp_path).o_supervisor.max_concurrent_shadows == 20
    assert load_config(None, "test", NO_ENV, cwd=tmp_path).logger.level == "warning"


def test_resolve_env_precedence() -> None:
    assert resolve_env(None, {}) == "dev"
    assert resolve_env(None, {"OSUP_ENV": "test"}) == "test"
    assert resolve_env(None, {"OSUP_ENV": ""}) == "dev"
    assert resolve_env("prod", {"OSUP_ENV": "test"}) == "prod"


def test_resolve_env_unknown_from_environment() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_env(None, {"OSUP_ENV": "staging"})
    err = info.value
    assert (err.file, err.key) == ("<environment>", "OSUP_ENV")
    assert err.expected == "one of dev, prod, test"
    assert str(err) == '<environment>: OSUP_ENV: expected one of dev, prod, test, got "staging"'


def test_resolve_env_unknown_from_cli() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_env("production", {})
    assert (info.value.file, info.value.key) == ("--env", "env")


def test_load_config_rejects_unknown_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, "staging", NO_ENV, cwd=tmp_path)
    assert info.value.key == "env"


def test_file_overlay_applies_to_selected_env_only(tmp_path: Path) -> None:
    text = '[logger]\nlevel = "error"\n[prod.logger]\nlevel = "critical"\n'
    assert load_text(tmp_path, text, "dev").logger.level == "error"  # no embedded overlay
    assert load_text(tmp_path, text, "prod").logger.level == "critical"
    assert load_text(tmp_path, text, "dev").o_supervisor.max_concurrent_shadows == 10


# ---------------------------------------------------------- config location
def test_resolve_config_path_precedence(tmp_path: Path) -> None:
    env = {"OSUP_CONFIG": str(tmp_path / "from_env.toml")}
    assert resolve_config_path(None, {}, cwd=tmp_path) is None
    local = write(tmp_path, "")
    assert resolve_config_path(None, {}, cwd=tmp_path) == local
    assert resolve_config_path(None, {"OSUP_CONFIG": ""}, cwd=tmp_path) == local
    assert resolve_config_path(None, env, cwd=tmp_path) == tmp_path / "from_env.toml"
    assert resolve_config_path("cli.toml", env, cwd=tmp_path) == tmp_path / "cli.toml"
    assert resolve_config_path("/abs/cli.toml", env, cwd=tmp_path) == Path("/abs/cli.toml")


def test_resolve_config_path_relative_to_process_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, {}) is None
    write(tmp_path, "")
    assert resolve_config_path(None, {}) == Path("config.toml")


def test_resolve_config_path_rejects_empty_cli() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config_path("", {})
    assert info.value.key == "config"


# ------------------------------------------------------------------- paths
def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    first = load_config(write(tmp_path / "a", ""), "dev", NO_ENV, cwd=tmp_path)
    second = load_config(write(tmp_path / "b", ""), "dev", NO_ENV, cwd=tmp_path)
    assert first.base_dir == tmp_path / "a"
    assert first.o_supervisor.run_dir == tmp_path / "a" / "data" / "run"
    assert second.o_supervisor.run_dir == tmp_path / "b" / "data" / "run"
    assert first.control_socket != second.control_socket
    assert first.pidfile != second.pidfile
    assert first.log_file == tmp_path / "a" / "data" / "logs" / "osup-mp.log"


def test_relative_config_path_resolved_against_cwd(tmp_path: Path) -> None:
    write(tmp_path / "tree", '[o_supervisor]\nwal_dir = "../shared/wal"\n')
    cfg = load_config("tree/config.toml", "dev", NO_ENV, cwd=tmp_path)
    assert cfg.source == tmp_path / "tree" / "config.toml"
    assert cfg.o_supervisor.wal_dir == tmp_path / "shared" / "wal"


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = '[o_supervisor]\ndata_dir = "~/osup"\nlog_dir = "/var/log/osup"\n'
    cfg = load_text(tmp_path, text)
    assert cfg.o_supervisor.data_dir == tmp_path / "home" / "osup"
    assert cfg.o_supervisor.log_dir == Path("/var/log/osup")


def test_main_script_and_executable_resolution(tmp_path: Path) -> None:
    text = '[o_supervisor]\ngerbil_main_script = "agent/main.ss"\ngerbil_executable = "./bin/gxi"\n'
    cfg = load_text(tmp_path, text)
    assert cfg.o_supervisor.gerbil_main_script == str(tmp_path / "agent" / "main.ss")
    assert cfg.o_supervisor.gerbil_executable == str(tmp_path / "bin" / "gxi")
    bare = load_text(tmp_path, '[o_supervisor]\ngerbil_main_script = "main.ss"\n')
    assert bare.o_supervisor.gerbil_main_script == "main.ss"
    assert bare.o_supervisor.gerbil_executable == "osup-mp-agent"


# ------------------------------------------------------------- overrides
def test_gerbil_environment_variables_override(tmp_path: Path) -> None:
    environ = {"GERBIL_EXECUTABLE": "gxi", "GERBIL_HOME": "/opt/gerbil"}
    path = write(tmp_path, '[o_supervisor]\ngerbil_executable = "from-file"\n')
    cfg = load_config(path, "dev", environ)
    assert cfg.o_supervisor.gerbil_executable == "gxi"
    assert cfg.o_supervisor.gerbil_home == Path("/opt/gerbil")
    empty = load_config(path, "dev", {"GERBIL_EXECUTABLE": "", "GERBIL_HOME": ""})
    assert empty.o_supervisor.gerbil_executable == "from-file"
    assert empty.o_supervisor.gerbil_home == Path("/usr/local/gerbil")


def test_overrides_mapping(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        "dev",
        NO_ENV,
        cwd=tmp_path,
        overrides={"supervisor": {"strategy": "rest_for_one"}},
    )
    assert cfg.supervisor.strategy is Strategy.REST_FOR_ONE
    with pytest.raises(ConfigError) as info:
        load_config(None, "dev", NO_ENV, cwd=tmp_path, overrides={"telemetry": {"period": 0}})
    assert (info.value.file, info.value.key) == ("<overrides>", "telemetry.period")


def test_warn_is_accepted_as_warning(tmp_path: Path) -> None:
    assert load_text(tmp_path, '[logger]\nlevel = "WARN"\n').logger.level == "warning"


def test_max_seconds_accepts_float(tmp_path: Path) -> None:
    assert load_text(tmp_path, "[supervisor]\nmax_seconds = 0.5\n").supervisor.max_seconds == 0.5


# ------------------------------------------------------------------ errors
def assert_one_line(err: ConfigError, path: object, key: str) -> str:
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    if key:
        assert f": {key}: " in message
    assert err.key == key and err.file == str(path)
    return message


def load_error(tmp_path: Path, text: str, env: str = "dev") -> tuple[ConfigError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env, NO_ENV)
    return info.value, path


def test_error_invalid_toml(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[logger\nlevel = 1\n")
    assert "invalid TOML: " in assert_one_line(err, path, "")


def test_error_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, "dev", NO_ENV)
    message = assert_one_line(info.value, path, "")
    assert message == f"{path}: cannot read config: No such file or directory"


def test_error_unknown_section(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[loggr]\nlevel = 'info'\n")
    assert "unknown table (did you mean logger?)" in assert_one_line(err, path, "loggr")


def test_error_unknown_key_with_suggestion(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[o_supervisor]\nheartbeat_timout = 6000\n")
    message = assert_one_line(err, path, "o_supervisor.heartbeat_timout")
    assert message.endswith("unknown key (did you mean heartbeat_timeout?)")


def test_error_unknown_env_overlay(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[staging.logger]\nlevel = 'info'\n")
    assert "unknown table" in assert_one_line(err, path, "staging")


def test_error_unknown_key_in_overlay(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[test.logger]\nlevl = 'info'\n")
    assert "did you mean level?" in assert_one_line(err, path, "test.logger.levl")


def test_error_int_for_bool(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[o_supervisor]\nevolution_enabled = 1\n")
    message = assert_one_line(err, path, "o_supervisor.evolution_enabled")
    assert message.endswith("expected a boolean (true or false), got 1")


def test_error_str_for_int(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[o_supervisor]\nheartbeat_timeout = "5s"\n')
    message = assert_one_line(err, path, "o_supervisor.heartbeat_timeout")
    assert message == (
        f"{path}: o_supervisor.heartbeat_timeout: "
        'expected a positive integer (milliseconds), got "5s"'
    )
    assert err.expected == "a positive integer (milliseconds)"


def test_error_bool_for_int(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[supervisor]\nmax_restarts = true\n")
    assert assert_one_line(err, path, "supervisor.max_restarts").endswith("got true")


def test_cpu_lists_are_sorted_sets_of_this_hosts_cpus(tmp_path: Path) -> None:
    host = sorted(os.sched_getaffinity(0))
    cfg = load_text(tmp_path, f"[agent]\nmain_cpus = [{host[-1]}, {host[0]}, {host[0]}]\n")
    assert cfg.agent.main_cpus == tuple(sorted({host[0], host[-1]}))
    assert cfg.watchdog.shadow_cpus == ()  # none: the scheduler places them
    for bad in ("[4096]", "[-1]", '"0"', "[true]", "[0.5]"):
        err, path = load_error(tmp_path, f"[watchdog]\nshadow_cpus = {bad}\n")
        message = assert_one_line(err, path, "watchdog.shadow_cpus")
        assert "expected a list of CPU numbers this host has (" in message, message


def test_error_negative_timeout(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[supervisor]\nshutdown_timeout = -1\n")
    assert assert_one_line(err, path, "supervisor.shutdown_timeout").endswith("got -1")


def test_error_timeout_not_above_interval(tmp_path: Path) -> None:
    text = "[o_supervisor]\nheartbeat_interval = 2000\nheartbeat_timeout = 2000\n"
    err, path = load_error(tmp_path, text)
    message = assert_one_line(err, path, "o_supervisor.heartbeat_timeout")
    assert "expected greater than heartbeat_interval (2000), got 2000" in message


def test_error_interval_raised_past_default_timeout(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[o_supervisor]\nheartbeat_interval = 9000\n")
    assert "less than heartbeat_timeout (5000)" in assert_one_line(
        err, path, "o_supervisor.heartbeat_interval"
    )


def test_error_bad_shm_name(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[o_supervisor]\nshared_memory_name = "no_slash"\n')
    message = assert_one_line(err, path, "o_supervisor.shared_memory_name")
    assert message.endswith('got "no_slash"')


def test_error_bad_strategy(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[supervisor]\nstrategy = "simple_one_for_one"\n')
    message = assert_one_line(err, path, "supervisor.strategy")
    assert "expected one of one_for_one, one_for_all, rest_for_one" in message


def test_error_bad_level(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[logger]\nlevel = "verbose"\n')
    assert "one of trace, debug, info" in assert_one_line(err, path, "logger.level")


def test_error_in_overlay_is_prefixed_with_env(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[dev.logger]\nlevel = "loud"\n')
    assert assert_one_line(err, path, "dev.logger.level").endswith('got "loud"')


def test_error_in_unselected_overlay_still_reported(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[prod.o_supervisor]\nmax_concurrent_shadows = -3\n")
    assert_one_line(err, path, "prod.o_supervisor.max_concurrent_shadows")


def test_error_overlay_heartbeat_blames_overlay_key(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, "[test.o_supervisor]\nheartbeat_timeout = 500\n", "test")
    assert_one_line(err, path, "test.o_supervisor.heartbeat_timeout")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "[o_supervisor]\nshared_memory_size = 1024\n",
            "o_supervisor.shared_memory_size",
        ),
        ('[o_supervisor]\ngerbil_executable = ""\n', "o_supervisor.gerbil_executable"),
        ('[o_supervisor]\ndata_dir = ""\n', "o_supervisor.data_dir"),
        ("[logger]\nretention = 0\n", "logger.retention"),
        ('[logger]\nmetadata = "module"\n', "logger.metadata"),
        ("[logger]\nmetadata = [1]\n", "logger.metadata"),
        ("[control]\nmax_frame = 512\n", "control.max_frame"),
        ("[control]\nmax_frame = 67108865\n", "control.max_frame"),
        ("[supervisor]\nmax_seconds = 0\n", "supervisor.max_seconds"),
        ("[supervisor]\nmax_seconds = inf\n", "supervisor.max_seconds"),
        ("[telemetry]\nperiod = 1.5\n", "telemetry.period"),
        ("logger = 3\n", "logger"),
        ("dev = 3\n", "dev"),
        ("[o_supervisor.run_dir]\nx = 1\n", "o_supervisor.run_dir"),
    ],
)
def test_error_other_bad_values(tmp_path: Path, text: str, key: str) -> None:
    err, path = load_error(tmp_path, text)
    assert_one_line(err, path, key)


def test_error_value_with_newline_stays_one_line(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[logger]\nlevel = "a\\nb"\n')
    assert assert_one_line(err, path, "logger.level").endswith('got "a\\nb"')


def test_config_error_pickles() -> None:
    err = ConfigError("config.toml", "logger.level", "a level", '"x"')
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.key, copy.expected, str(copy)) == (
        err.file,
        err.key,
        err.expected,
        str(err),
    )


# ------------------------------------------------------------- to_dict etc.
def test_to_dict_is_json_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, "test", NO_ENV, cwd=tmp_path)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["env"] == "test" and data["source"] is None
    assert data["supervisor"]["strategy"] == "one_for_one"
    assert data["o_supervisor"]["run_dir"] == str(tmp_path / "data" / "run")
    assert data["logger"]["metadata"] == ["request_id", "module", "function"]
    sections = {k: v for k, v in data.items() if k not in ("env", "source", "base_dir")}
    again = load_config(None, "test", NO_ENV, cwd=tmp_path, overrides=sections)
    assert again == cfg


def test_to_dict_includes_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(path, "dev", NO_ENV).to_dict()["source"] == str(path)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(None, "dev", NO_ENV, cwd=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.env = "prod"  # type: ignore[misc]


def test_the_config_strategies_are_the_runtimes() -> None:
    from osup_mp.runtime.children import Strategy as RuntimeStrategy

    assert {s.value for s in Strategy} == {s.value for s in RuntimeStrategy}


# ------------------------------------------------------- which value is in force
def test_default_env_changes_nothing_of_the_shipped_base() -> None:
    """dev is what runs without --env: its shipped overlay must not silently change the base."""
    dev = load_config(SHIPPED, "dev", NO_ENV)
    base = load_config(SHIPPED, "dev", NO_ENV, overlay=False)
    assert dev == base
    assert "dev" not in default_document()


def test_overridden_names_the_overlay_and_environment_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[logger]\nlevel = 'info'\n[wal]\nfsync = 'no'\n"
        "[prod.logger]\nlevel = 'error'\n[prod.wal]\nfsync = 'no'\n[test.vault]\ngenerations = 7\n",
    )
    prod = load_config(path, "prod", {"GERBIL_HOME": "/opt/g"})
    assert dict(prod.overridden) == {
        "logger.level": "prod.logger.level",
        "wal.fsync": "prod.wal.fsync",
        "o_supervisor.gerbil_home": "GERBIL_HOME",
    }
    base = load_config(path, "prod", NO_ENV, overlay=False)
    assert base.logger.level == "info" and base.o_supervisor.gerbil_home == Path(
        "/usr/local/gerbil"
    )
    assert base.overridden == {} and base.vault.generations == 3
    assert load_config(path, "dev", NO_ENV).overridden == {}


def test_config_command_marks_overridden_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from osup_mp.cli import cli as main

    path = write(tmp_path, "[logger]\nlevel = 'info'\n[prod.logger]\nlevel = 'error'\n")
    runner = CliRunner()
    text = runner.invoke(main, ["config", "--config", str(path), "--env", "prod"], env={})
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == 'env = "prod"  # chosen by --env'
    assert 'level = "error"  # set by the [prod.logger] overlay; base value "info"' in lines
    assert [line for line in lines if "#" in line and "[" not in line.split("#")[0]] == [
        lines[0],
        'level = "error"  # set by the [prod.logger] overlay; base value "info"',
    ]
    env = runner.invoke(main, ["config", "--config", str(path)], env={"OSUP_ENV": "prod"})
    assert env.stdout.splitlines()[0] == 'env = "prod"  # chosen by OSUP_ENV'
    plain = runner.invoke(main, ["config", "--config", str(path)], env={"OSUP_ENV": ""})
    assert plain.stdout.splitlines()[0] == 'env = "dev"  # the default environment'
    assert "set by" not in plain.stdout

    data = json.loads(
        runner.invoke(main, ["config", "--json", "--config", str(path), "--env", "prod"]).stdout
    )
    assert data["overridden"] == {"logger.level": {"by": "prod.logger.level", "base": "info"}}
    assert data["logger"]["level"] == "error"


def test_error_compare_hook_not_a_function_path(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, '[evolution]\ncompare = "my module.py"\n')
    message = assert_one_line(err, path, "evolution.compare")
    assert message.endswith('expected "" or "package.module:function", got "my module.py"')
