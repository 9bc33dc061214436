"""Genetic runs over a running tree: what surrounds the pure search of
:mod:`osup_mp.evolution.genetic` (the gate a variant passes before it costs a shadow; next,
the evaluators and the run itself)."""
