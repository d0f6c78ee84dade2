"""Keep the `paper` scale from rotting without a GPU: build every paper-scale configuration
and run one step of it on CPU."""

import torch

from sgdbook import directional as vd
from sgdbook.papers.vmf_directional.settings.kappa_bias import SETTINGS as KAPPA_BIAS, TABLE1_PAPER


def test_vmf_kappa_bias_paper_scale_one_step():
    cfg = KAPPA_BIAS("paper")
    gen = torch.Generator().manual_seed(0)
    for d, _ in TABLE1_PAPER.values():  # every Table 1 dimension, one simulation each
        k = vd.kappa_hat_of_vmf(d, 0.0, cfg["sample_sizes"], 1, gen)
        assert k.shape == (1, len(cfg["sample_sizes"])) and (k > 0).all()
    mu = torch.zeros(cfg["fig8_d"])
    mu[0] = 1
    for kappa in cfg["fig8_kappas"]:  # one real vMF draw of the full sample size per κ
        x = vd.sample_vmf(mu, float(kappa), max(cfg["sample_sizes"]), gen)
        assert x.shape == (max(cfg["sample_sizes"]), cfg["fig8_d"]) and torch.isfinite(x).all()
