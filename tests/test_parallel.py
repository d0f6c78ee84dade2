import functools
import math
import operator
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgdbook import parallel
from sgdbook.papers.walk_with_sgd import walk as W
from sgdbook.trajectory import max_gradient_variance


def test_run_jobs_keeps_the_order_and_takes_tuples_or_keywords():
    jobs = [(i, i + 1) for i in range(7)]
    assert parallel.run_jobs(operator.mul, jobs, workers=2) == [i * (i + 1) for i in range(7)]
    assert parallel.run_jobs(operator.mul, jobs, workers=1) == [i * (i + 1) for i in range(7)]
    assert parallel.run_jobs(dict, [dict(a=1), dict(b=2)], workers=2) == [{"a": 1}, {"b": 2}]
    assert parallel.run_jobs(operator.mul, [], workers=2) == []


def test_run_jobs_names_the_failing_job_and_keeps_the_error():
    with pytest.raises(ValueError, match="math domain error") as err:
        parallel.run_jobs(math.sqrt, [(4.0,), (-1.0,)], workers=2, label=lambda job: f"sqrt of {job[0]:g}")
    assert err.value.__notes__ == ["in the job sqrt of -1"]
    assert parallel.run_jobs(math.sqrt, [(4.0,), (9.0,)], workers=2) == [2.0, 3.0]  # the pool survives an error
    with pytest.raises(OSError) as err:  # an error whose constructor takes other arguments keeps them
        parallel.run_jobs(os.stat, [("/no/such/file",), (".",)], workers=2)
    assert err.value.errno == 2 and "in the job" in err.value.__notes__[0]


def _exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped is gone too
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stopped_pool_is_replaced():
    assert parallel.run_jobs(abs, [(-1,), (-2,)], workers=2) == [1, 2]
    procs = list(parallel._POOLS[2]._processes.values())
    parallel._drop(2, stop=True)  # what an interrupt does
    for proc in procs:  # gone from the OS (is_alive can race with the executor's own thread reaping it)
        proc.join(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _exists(proc.pid):
            time.sleep(0.05)
        assert not _exists(proc.pid)
    assert 2 not in parallel._POOLS
    assert parallel.run_jobs(abs, [(-3,), (-4,)], workers=2) == [3, 4]


def test_what_cannot_reach_a_worker_is_refused_with_a_reason():
    def own(g):
        return g

    own.__module__ = "__main__"  # as a notebook's def
    for bad in (own, functools.partial(own), lambda g: g):
        with pytest.raises(ValueError, match="builder"):
            parallel.check_sendable(bad, "the builder")
    parallel.check_sendable(functools.partial(W.make_model, "mlp", {"paper_models": False}), "the builder")
    with pytest.raises(ValueError, match="job function"):
        parallel.run_jobs(lambda a: a, [(1,), (2,)], workers=2)


def test_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.default_workers() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(parallel.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=parallel.WORKERS_ENV):
            parallel.default_workers()
    with pytest.raises(ValueError, match="at least 1"):
        parallel.run_jobs(abs, [(1,)], workers=0)


def test_run_walks_in_the_pool_equals_run_walk_with_one_thread():
    d = W.digits_split(150)
    cfg = {"paper_models": False}
    jobs = [dict(name=n, lr=0.1, steps=12, batch_size=b, seed=s, windows=[(4, 8)], model=W.model_builder(n, cfg))
            for n, b, s in (("cnn", 25, 0), ("resnet", 50, 1), ("mlp", 25, 2))]
    post = functools.partial(W.span_heights, spans=[(4, 6), (6, 8)], rtol=1e-4)
    pool = W.run_walks(d, jobs, post=post, workers=2)
    here = W.run_walks(d, jobs, post=post, workers=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = [W.run_walk(data=d, **j) for j in jobs]
        ref_heights = [W.span_heights(r, [(4, 6), (6, 8)], rtol=1e-4) for r in ref]
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    for (a, ha), (b, hb), r in zip(pool, here, ref):
        assert a.data is d and b.data is d
        assert (a.name, a.lr, a.batch_size, a.seed) == (r.name, r.lr, r.batch_size, r.seed)
        for t in (a.traj, b.traj):
            assert torch.equal(t.windows[0].thetas, r.traj.windows[0].thetas)
            torch.testing.assert_close(t.cos, r.traj.cos, rtol=0, atol=0, equal_nan=True)  # cos[0] is nan
            assert torch.equal(t.loss, r.traj.loss) and torch.equal(t.dist, r.traj.dist)
        assert ha == hb == ref_heights[len(ref_heights) - len(ref) + ref.index(r)]
        for p, q in zip(a.model.state_dict().values(), r.model.state_dict().values()):
            assert torch.equal(p, q)  # the initial model, the template of every evaluation


def test_run_walks_refuses_a_builder_it_cannot_send():
    d = W.digits_split(150)
    job = dict(name="mlp", lr=0.1, steps=2, batch_size=25, model=lambda g: W.standin("mlp", g))
    with pytest.raises(ValueError, match="model_builder"):
        W.run_walks(d, [job, job], workers=2)
    with pytest.raises(ValueError, match="model_builder"):
        W.run_walks(d, [job], workers=1)  # whatever the number of workers
    with pytest.raises(ValueError, match="post"):
        W.run_walks(d, [dict(job, model=W.model_builder("mlp", {"paper_models": False}))], post=lambda r: 0, workers=1)


def test_run_checkpointeds_in_the_pool_equals_run_checkpointed_with_one_thread():
    d = W.digits_split(150)
    cfg = {"paper_models": False}
    base = [dict(data=d, model=W.model_builder(n, cfg), init=W.init_seed(n, s), generator_seed=7 + s, lr=0.1, steps=6,
                 every=3, batch_size=b, noise_std=z, run=f"{n} {s}")
            for n, b, s, z in (("cnn", 25, 0, 0.0), ("resnet", None, 1, 0.05), ("mlp", 50, 2, 0.0))]
    pool = W.run_checkpointeds(base, workers=2)
    here = W.run_checkpointeds(base, workers=1)
    cont = [dict(j, steps=3, start=r.last, generator_seed=99) for j, r in zip(base, pool)]
    pool2 = W.run_checkpointeds(cont, workers=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref, ref2 = [], []
        for j in base:
            model = W.make_model(j["run"].split()[0], cfg, torch.Generator().manual_seed(j["init"]))
            kw = {k: j[k] for k in ("lr", "steps", "every", "batch_size", "noise_std", "run")}
            ref.append(W.run_checkpointed(model, d, generator=torch.Generator().manual_seed(j["generator_seed"]), **kw))
            ref2.append(W.run_checkpointed(model, d, generator=torch.Generator().manual_seed(99), start=ref[-1].last,
                                           **dict(kw, steps=3)))
    finally:
        torch.set_num_threads(before)
    for runs, refs in ((pool, ref), (here, ref), (pool2, ref2)):
        for a, r in zip(runs, refs):
            assert a.steps == r.steps and a.train_loss == r.train_loss and a.valid_acc == r.valid_acc
            np.testing.assert_array_equal(a.dist, r.dist)
            np.testing.assert_array_equal(a.cos, r.cos)
            assert torch.equal(a.last.theta, r.last.theta)
    assert pool2[0].steps == [3]  # the continuation's own steps
    with pytest.raises(ValueError, match="model_builder"):
        W.run_checkpointeds([dict(base[0], model=lambda g: W.standin("mlp", g))], workers=1)


def test_max_variances_at_init_equal_the_estimate_here():
    d = W.digits_split(150)
    cfg = {"paper_models": False}
    jobs = [dict(data=d, model=W.model_builder(n, cfg), init=W.init_seed(n, 0), generator_seed=3, batch_size=25, n_batches=4)
            for n in ("cnn", "mlp")]
    got = W.max_variances_at_init(jobs, workers=2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = [max_gradient_variance(W.make_model(n, cfg, torch.Generator().manual_seed(W.init_seed(n, 0))),
                                      F.cross_entropy, d.x, d.y, batch_size=25, n_batches=4,
                                      generator=torch.Generator().manual_seed(3)) for n in ("cnn", "mlp")]
    finally:
        torch.set_num_threads(before)
    assert got == want and all(v > 0 for v in got)


def test_run_walks_by_role_gives_each_stand_in_its_data_in_the_jobs_order():
    small, other = W.digits_split(150), W.digits_split(120)
    cfg = {"paper_models": False}
    datas = {"cnn": small, "resnet": small, "mlp": other}
    jobs = [dict(name=n, lr=0.1, steps=3, batch_size=30, seed=s, windows=[], model=W.model_builder(n, cfg))
            for n, s in (("mlp", 0), ("cnn", 1), ("mlp", 1), ("resnet", 0))]
    got = W.run_walks_by_role(datas, jobs, workers=2)
    for j, (run, _) in zip(jobs, got):
        assert run.name == j["name"] and run.seed == j["seed"] and run.data is datas[j["name"]]
        ref = W.run_walks(datas[j["name"]], [j], workers=1)[0][0]
        assert torch.equal(ref.traj.loss, run.traj.loss)
    with pytest.raises(ValueError, match="no data for mlp"):
        W.run_walks_by_role({"cnn": small}, jobs[:2], workers=1)


def test_run_seeded_refuses_a_run_function_or_builder_it_cannot_send_and_names_the_caller():
    d = W.digits_split(150)
    job = dict(data=d, model=W.model_builder("mlp", {"paper_models": False}), init=0, generator_seed=1, steps=1)
    with pytest.raises(ValueError, match="my_caller: the run function"):
        W.run_seeded(lambda net, data, generator, steps: 0, [job], caller="my_caller", workers=1)
    with pytest.raises(ValueError, match="my_caller: the model builder of 'r1'.*model_builder"):
        W.run_seeded(W.run_checkpointed, [dict(job, model=lambda g: W.standin("mlp", g), run="r1")], caller="my_caller",
                     workers=1)
    assert W._job_label(dict(job)) == "init=0 generator_seed=1 steps=1"  # a job without a run name
