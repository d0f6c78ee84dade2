import pytest
import torch

from sgdbook import schedules as S


def test_constant_step_and_as_schedule():
    assert S.as_schedule(0.1).values(3).tolist() == [0.1, 0.1, 0.1]
    st = S.step(1.0, [2, 4], gamma=0.5)
    assert st.values(6).tolist() == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert S.as_schedule(st) is st
    assert S.as_schedule(lambda t: 0.1 * t).values(3).tolist() == pytest.approx([0.0, 0.1, 0.2])


def test_clr_is_a_repeated_triangle_and_trapezoid_its_first_rise_then_flat_then_anneal():
    c = S.clr(0.1, 0.5, 4)
    v = c.values(17)
    torch.testing.assert_close(v[:9], torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    torch.testing.assert_close(v[8:], v[:9])  # period 8
    assert S.clr(0.1, 0.5, 4, cycles=1).values(12)[8:].tolist() == [0.1] * 4
    tz = S.trapezoid(0.1, 0.5, warmup=4, flat=3, anneal=5, final_lr=0.0)
    w = tz.values(14)
    torch.testing.assert_close(w[:5], v[:5])  # the same rise as CLR's first cycle
    assert w[4:7].tolist() == [0.5] * 3
    torch.testing.assert_close(w[7:12], torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    assert w[12:].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: S.constant(-1.0), "rate"),
        (lambda: S.constant(float("inf")), "rate"),
        (lambda: S.clr(0.1, 0.5, 0), "half_cycle"),
        (lambda: S.trapezoid(0.1, 0.5, 2, 2, 0), "anneal"),
        (lambda: S.step(0.1, [5, 3]), "increasing"),
        (lambda: S.step(0.1, [3], gamma=0.0), "gamma"),
        (lambda: S.as_schedule("fast"), "learning rate"),
        (lambda: S.as_schedule(lambda t: -1.0).values(2), "invalid rate"),
    ],
)
def test_bad_schedules_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()
