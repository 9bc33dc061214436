# Recipes run exactly what CI (.ci/run) and the README run.

# Install and run the supervisor in the foreground on ./config.toml
run:
    pip install . && osup-mp start

# Install with the dev extra and run the whole test suite (the README's test command)
test:
    pip install -e '.[dev]' && python -m pytest

lint:
    ruff check osup_mp tests tools
    ruff format --check osup_mp tests tools
    mypy
    lint-imports

# The fault matrix, longer than in CI: 200 random kills, 100 corruption seeds
soak:
    OSUP_SOAK=1 python -m pytest -m faults tests/faults

# Benchmarks print their figures next to same-run baselines
bench:
    python tools/bench/runtime.py
    python tools/bench/agent.py
    python tools/bench/wal.py
    python tools/bench/splitter.py
    python tools/bench/standby.py
    python tools/bench/evolve.py

ci:
    bash .ci/run
