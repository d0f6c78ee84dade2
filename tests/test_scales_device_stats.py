import math

import numpy as np
import pytest
import torch

from sgdbook.book.device import DeviceError, resolve_device
from sgdbook.book.scales import SCALES, ScaleError, ScaleTable, check_scale
from sgdbook.stats import joint_z_test, variance_ratio_test, z_scores


def test_check_scale_lists_valid_scales():
    assert check_scale("book") == "book"
    with pytest.raises(ScaleError, match="valid scales are smoke, book, paper"):
        check_scale("bogus")


def test_scale_table_validates_and_renders():
    table = ScaleTable(
        settings={s: {"n": i + 1} for i, s in enumerate(SCALES)},
        descriptions={"n": "a number"},
        paper_value={"n": "3"},
    )
    assert table("paper") == {"n": 3}
    md = table.to_markdown(current="book")
    assert "**book** (this run)" in md and "| n | a number | 1 | 2 | 3 | 3 |" in md
    with pytest.raises(ValueError, match="describes"):
        ScaleTable(settings={s: {"n": 1} for s in SCALES}, descriptions={"m": "x"})
    with pytest.raises(ValueError, match="exactly the scales"):
        ScaleTable(settings={"smoke": {}, "book": {}}, descriptions={})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="no usable CUDA device.*DEVICE=cpu"):
        resolve_device("cuda")


def test_joint_z_test_is_calibrated_on_normal_draws():
    rng = np.random.default_rng(0)
    p = [joint_z_test(rng.standard_normal(18)).p_value for _ in range(2000)]
    assert abs(np.mean(np.array(p) < 0.05) - 0.05) < 0.02
    t = joint_z_test(np.r_[np.zeros(17), 10.0])
    assert t.max_abs_z == 10.0 and t.passes() == (False, False)
    assert t.bonferroni_z == pytest.approx(3.4524, abs=1e-3)


def test_z_scores_and_variance_ratio():
    assert z_scores(3.0, 3.0, 0.0, 4.0) == pytest.approx(0.6)
    rng = np.random.default_rng(1)
    draws = rng.normal(0.0, 2.0, size=(500, 5))
    _, df, p1 = variance_ratio_test(draws.std(1, ddof=1), 5, 2.0, ddof=1)
    assert df == 2000 and p1 > 1e-3
    _, _, p0 = variance_ratio_test(draws.std(1, ddof=1), 5, 2.0, ddof=0)
    assert p0 < 1e-6  # treating sample sds as population sds is detected
    assert math.isfinite(p0)
