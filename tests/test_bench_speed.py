"""bench/speed.py bank: the sorted bank against the old row-order build, on generated data."""

from __future__ import annotations

from tests.helpers import load_bench_script


def test_bank_benchmark_compares_equal_banks_and_times_both() -> None:
    speed = load_bench_script("speed")
    out = speed.bank("synthetic", 150, reps=1)
    assert out["users"] == 150 and out["length_max"] >= out["length_median"] > 0
    assert out["banks_max_abs_diff"] <= 1e-5  # the same vectors, however they are batched
    for key in ("bank_s", "client_step_s"):
        assert set(out[key]) == {"sorted", "row order"} and min(out[key].values()) > 0
