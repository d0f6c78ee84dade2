"""The library's promise to a caller's model, for every estimator that takes one.

An estimator reads a model; it does not train it, switch its modes, leave gradients in it, update
its batch-norm statistics, swap its parameters for plain tensors, or draw from the global random
generator. Each estimator below runs on each shared case (``tests/cases.py``) inside the
``untouched`` fixture (``tests/conftest.py``), with the model in a mixed state: training on, the
first module switched to eval, and a ``.grad`` already on the first parameter (which must stay).
Adding an estimator that takes a model? Add it to ESTIMATORS.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cases import CASES
from sgdbook import curvature, ensemble, functional, gradients, landscape, training, trajectory

NO_BN = lambda c: not c.bn  # noqa: E731
ANY = lambda c: True  # noqa: E731


def _flat_loss(case, model, x, y, gen):
    f, theta = functional.flat_loss(model, F.cross_entropy, x, y, bn_mode="train" if case.bn else None)
    torch.func.grad(f)(theta)
    functional.unflatten(model, theta)


def _per_example(method):
    def run(case, model, x, y, gen):
        gradients.per_example_grads(model, F.cross_entropy, x, y, bn_mode=case.bn_mode, method=method)
    return run


def _minibatch_moments(case, model, x, y, gen):
    u = torch.ones(functional.flat_parameters(model).numel(), dtype=x.dtype)
    gradients.minibatch_moments(model, F.cross_entropy, x, y, 3, 4, gen, u=u)
    gradients.minibatch_moments(model, F.cross_entropy, x, y, 3, 4, gen, bn_mode="eval")


def _second_moment(case, model, x, y, gen):
    op = gradients.second_moment_operator(model, F.cross_entropy, x, y, bn_mode=case.bn_mode)
    op @ functional.flat_parameters(model)
    gradients.second_moment_matrix(model, F.cross_entropy, x, y, bn_mode=case.bn_mode, centered=True)


def _hvp(fast_path):
    def run(case, model, x, y, gen):
        kw = {"bn_mode": "train"} if case.bn else {}
        op = curvature.HVP.from_model(model, F.cross_entropy, x, y, fast_path=fast_path, **kw)
        op(torch.ones(op.p, dtype=x.dtype))
        op.batch(torch.ones(2, op.p, dtype=x.dtype))
        curvature.lanczos(op, op.p, 2, generator=gen)
        curvature.hutchinson_trace(op, op.p, 2, gen)
    return run


def _evaluate(case, model, x, y, gen):
    training.evaluate(model, F.cross_entropy, x, y)
    training.check_model_data(model, x)


def _segment(case, model, x, y, gen):
    theta = functional.flat_parameters(model)
    landscape.segment_profile(model, F.cross_entropy, x, y, theta, theta * 0.9, n_alpha=3, noise_repeats=1,
                              bn_mode="train" if case.bn else None, generator=gen)


def _gradient_variance(case, model, x, y, gen):
    trajectory.max_gradient_variance(model, F.cross_entropy, x, y, batch_size=2, n_batches=3, generator=gen)


def _trajectory(case, model, x, y, gen):
    trajectory.record_trajectory(model, F.cross_entropy, x, y, steps=2, lr=0.1, generator=gen, batch_size=3,
                                 windows=[(0, 2)])


def _residual(case, model, x, y, gen):
    curvature.residual_hessian(model, F.cross_entropy, x, y)
    curvature.residual_hvp(model, F.cross_entropy, x, y)(functional.flat_parameters(model))


def _ensemble(case, model, x, y, gen):
    # the caller's model as the base of a stacked ensemble; its stacked parameters must stay as given too
    params = {k: torch.stack([p.detach(), p.detach() + 0.1]) for k, p in model.named_parameters()}
    kept = {k: v.clone() for k, v in params.items()}
    res = ensemble.ensemble_sgd(model, params, x, y, F.cross_entropy, lr=0.1, batch_size=3, steps=2,
                                generator=gen, eval_every=1)
    ensemble.evaluate_runs(model, res.params, x, y)
    assert all(torch.equal(params[k], kept[k]) for k in kept), "ensemble_sgd changed the parameters it was given"


ESTIMATORS = {
    "functional.flat_loss": (_flat_loss, ANY),
    "gradients.per_example_grads[auto]": (_per_example("auto"), ANY),
    "gradients.per_example_grads[vmap]": (_per_example("vmap"), ANY),
    "gradients.full_gradient": (lambda c, m, x, y, g: gradients.full_gradient(m, F.cross_entropy, x, y), ANY),
    "gradients.minibatch_moments": (_minibatch_moments, ANY),
    "gradients.second_moment_operator": (_second_moment, ANY),
    "curvature.HVP.from_model": (_hvp(True), ANY),
    "curvature.HVP.from_model[autograd]": (_hvp(False), ANY),
    "training.evaluate": (_evaluate, ANY),
    "landscape.segment_profile": (_segment, ANY),
    "trajectory.max_gradient_variance": (_gradient_variance, ANY),
    "trajectory.record_trajectory": (_trajectory, ANY),
    "curvature.residual_hessian": (_residual, NO_BN),
    "ensemble.ensemble_sgd": (_ensemble, NO_BN),
}

PAIRS = [pytest.param(name, case, id=f"{name}-{case.name}")
         for name, (_, applies) in ESTIMATORS.items() for case in CASES if applies(case)]


@pytest.mark.parametrize("name, case", PAIRS)
def test_an_estimator_leaves_the_model_untouched(name, case, untouched):
    model = case.model()
    x, y = case.data()
    model.train()
    first = next(m for m in model.modules() if m is not model)
    first.eval()  # a mixed state: every module's mode must come back as it was
    p0 = next(model.parameters())
    p0.grad = torch.full_like(p0, 0.25)  # a gradient the caller had: neither zeroed nor accumulated into
    run, _ = ESTIMATORS[name]
    with untouched(model, what=name):
        run(case, model, x, y, torch.Generator().manual_seed(0))


def test_seqmodels_leave_the_model_untouched(untouched):
    from sgdbook.papers.batch_size_variance import seqmodels as sm

    gen = torch.Generator().manual_seed(0)
    data = sm.synthetic_sentiment(12, 24, 7, gen, n_keywords=3, keyword_rate=0.3, min_len=2)
    with torch.random.fork_rng(devices=[]):
        model = sm.transformer_classifier(24, 7, 8, 2, 1, 12, gen, init_std=0.3, dtype=torch.float64)
    model.train()
    params = sm.stack_params(dict(model.named_parameters()), 2)
    adam = sm.AdamConfig(lr=1e-3, eps=1e-8, weight_decay=0.01, max_grad_norm=1.0, warmup_steps=0)
    with untouched(model, what="seqmodels"):
        sm.per_run_logits(model, params, data.tokens, data.mask)
        sm.evaluate(model, params, data, chunk=5)
        sm.subset_gradients(model, params, data, chunk=5)
        sm.lockstep_adam(model, data, data, 4, 1, 2, adam, gen, eval_chunk=6)


@pytest.mark.parametrize("harm", ["mode", "grad", "new grad", "buffer", "parameter value", "parameter object",
                                  "requires_grad", "global rng"])
def test_the_fixture_notices_each_kind_of_harm(harm, untouched):
    from cases import bn_mlp

    model = bn_mlp()
    model[0].weight.grad = torch.zeros_like(model[0].weight)
    with pytest.raises(AssertionError):
        with untouched(model, what=harm):
            with torch.no_grad():
                if harm == "mode":
                    model[1].eval()
                elif harm == "grad":
                    model[0].weight.grad += 1
                elif harm == "new grad":
                    model[3].bias.grad = torch.ones_like(model[3].bias)
                elif harm == "buffer":
                    model[1].num_batches_tracked += 1
                elif harm == "parameter value":
                    model[3].weight[0, 0] += 1e-12
                elif harm == "parameter object":
                    model[3].weight = torch.nn.Parameter(model[3].weight.clone())
                elif harm == "requires_grad":
                    model[3].bias.requires_grad_(False)
                else:
                    torch.rand(1)
