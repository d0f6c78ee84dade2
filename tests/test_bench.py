import time

import torch

from sgdbook import bench


def test_compare_orders_contenders_and_interleaves():
    calls = []

    def fast():
        calls.append("f")
        return 1

    def slow():
        calls.append("s")
        time.sleep(0.01)
        return 2

    t = bench.compare({"fast": fast, "slow": slow}, reps=3, warmup=1)
    assert calls == ["f", "s"] * 4
    r = bench.ratios(t, "slow")
    assert r["slow"] == 1.0 and r["fast"] < 0.5
    assert t["slow"].result == 2 and len(t["fast"].times_s) == 3


def test_single_thread_restores():
    before = torch.get_num_threads()
    with bench.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_peak_memory_sees_a_large_temporary():
    def alloc():
        x = torch.ones(40_000_000)  # 160 MB, touched
        time.sleep(0.02)
        return float(x[-1])

    out, peak = bench.peak_memory(alloc)
    assert out == 1.0 and peak > 100e6


def test_compare_waits_for_the_gpu(monkeypatch):
    # the clock must not stop before queued CUDA work is done: compare synchronises around each call
    events = []
    monkeypatch.setattr(bench, "_synchronize", lambda: events.append("sync"))
    bench.compare({"a": lambda: events.append("a")}, reps=2, warmup=0)
    assert events == ["sync", "a", "sync"] * 2
