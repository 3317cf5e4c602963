"""The benchmark suite's timing protocol (no timings are asserted)."""

import pytest

from fastconv import bench


def test_side_by_side_takes_turns_in_rounds(monkeypatch):
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = bench.side_by_side(steps, repeats=2, rounds=3)
    assert set(times) == {"a", "b", "c"}
    assert all(t >= 0 for t in times.values())
    # each round times every step in one block, in turn: a..a b..b c..c, three times
    blocks = [calls[0]]
    for name in calls[1:]:
        if name != blocks[-1]:
            blocks.append(name)
    assert blocks == ["a", "b", "c"] * 3


@pytest.mark.parametrize("option", ["--rounds", "--repeats"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_bench_rejects_non_positive_counts(option, value, capsys):
    with pytest.raises(SystemExit):
        bench.main([option, value, "--cases", "lenet1"])
    assert "positive integer" in capsys.readouterr().err
