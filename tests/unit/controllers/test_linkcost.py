"""Equation (2) of the paper and the link state derived from its streams."""

import pytest

from controllers.linkcost import CostWeights, link_cost, link_state

W = CostWeights()


@pytest.mark.parametrize(
    ("available", "previous", "cost"),
    [
        pytest.param(0, 0, 100.0, id="empty-costs-c0"),
        pytest.param(100, 100, 50.0, id="full-and-steady-costs-c0-minus-w1"),
    ],
)
def test_link_cost_at_the_ends_of_the_buffer(available: int, previous: int, cost: float) -> None:
    assert link_cost(available=available, previous=previous, capacity=100, weights=W) == cost


def test_filling_link_is_cheaper_than_draining_link_at_same_fill() -> None:
    filling = link_cost(available=50, previous=40, capacity=100, weights=W)
    draining = link_cost(available=50, previous=60, capacity=100, weights=W)
    assert filling == 100 - 25 - 2.5
    assert draining == 100 - 25 + 2.5
    assert filling < draining


def test_cost_never_drops_below_one_even_with_extreme_weights() -> None:
    weights = CostWeights(c0=10, w1=50, w2=50)
    assert link_cost(available=100, previous=0, capacity=100, weights=weights) == 1.0


def test_zero_capacity_is_an_error_that_names_the_value() -> None:
    with pytest.raises(ValueError, match="got 0"):
        link_cost(available=0, previous=0, capacity=0, weights=W)


@pytest.mark.parametrize(
    ("streams", "state"),
    [
        (["Up", "Up"], "Up"),
        (["Up", "Down"], "Degraded"),
        (["Degraded"], "Degraded"),
        (["Down", "Unknown"], "Down"),
        ([], "Down"),
    ],
)
def test_link_state_follows_its_streams(streams: list[str], state: str) -> None:
    assert link_state(streams) == state
