"""The library's tables of activations, losses and valid pairs against the
hand-written table of cases (tests/cases.py), and ``fastbp check``'s grid
against the same cases: a pair the library gains without a test case, or one
the cases or the command drop, fails here instead of silently losing coverage."""

from cases import HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_PAIRS, REDUCTIONS

from fastbp import _core
from fastbp.cli import _check_grid


def test_activation_and_loss_tables_match_the_cases():
    hidden = {a for a in _core.ACTIVATIONS if a not in _core.LAST_LAYER_ONLY}
    assert hidden == set(HIDDEN_ACTIVATIONS)
    assert set(_core.LOSSES) == set(LOSSES)
    assert set(_core.REDUCTIONS) == set(REDUCTIONS)
    pairs = {(act, loss) for loss, acts in _core.OUTPUT_ACTIVATIONS.items() for act in acts}
    assert pairs == set(OUTPUT_PAIRS)
    assert len(OUTPUT_PAIRS) == len(set(OUTPUT_PAIRS)) == 9


def test_check_command_covers_every_case():
    """``fastbp check`` runs every output pair, every hidden activation, both
    reductions, a network without some biases and one with l2."""
    grid = list(_check_grid())
    assert {(acts[-1], loss) for _, acts, loss, _ in grid} == set(OUTPUT_PAIRS)
    assert {a for _, acts, _, _ in grid for a in acts[:-1]} == set(HIDDEN_ACTIVATIONS)
    assert {opts.get("reduction", "mean") for *_, opts in grid} == set(REDUCTIONS)
    assert any(opts.get("l2", 0) > 0 for *_, opts in grid)
    assert any(not all(opts["bias"]) if isinstance(opts.get("bias", True), list)
               else not opts.get("bias", True) for *_, opts in grid)
