"""benchmarks/data_efficiency.py --covered-per-temperature: the candidate budget moves from items that
already hold an accepted rationale to those without one, and the iteration costs what it would unfocused."""
import pytest

from illume.records import Item


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("data_efficiency")


def pool(n):
    return [Item(f"item-{i}", "x.png", "What colour is the square?", "blue", []) for i in range(n)]


@pytest.mark.parametrize("covered", [1, 3, 6])
def test_uncovered_items_share_the_covered_items_budget(bench, covered):
    items = pool(7)
    have = {f"item-{i}" for i in range(covered)}
    counts = bench.focused_counts(items, have, per_temperature=5, covered_per_temperature=1)
    assert sum(counts.values()) == 5 * len(items)  # equal cost
    assert all(counts[i] == 1 for i in have)
    rest = [counts[i.item_id] for i in items if i.item_id not in have]
    assert max(rest) - min(rest) <= 1 and min(rest) >= 5 < max(rest)


@pytest.mark.parametrize("have, focus", [({"item-0"}, None), (set(), 1), ({f"item-{i}" for i in range(4)}, 1)])
def test_unfocused_or_nothing_to_move_keeps_every_item_at_per_temperature(bench, have, focus):
    assert set(bench.focused_counts(pool(4), have, 5, focus).values()) == {5}
