"""The rules that find a bad step, and the roll-back budget."""

import pytest

from pretrain.guard import BadStep, RollbackBudget, RollbackLimit, ScaleRule, SpikeRule


def test_a_loss_above_k_times_the_running_median_is_a_spike():
    rule = SpikeRule(factor=2.0, window=5)
    for step, loss in enumerate([4.0, 3.9, 3.8, 3.9, 3.7, 3.6, 3.5, 3.4, 3.3, 3.2], start=1):
        assert not rule.spiked(step, loss)
    assert sorted(rule.losses) == [6, 7, 8, 9, 10]  # the window: the last 5 losses
    assert not rule.spiked(11, 6.8)  # median 3.4: 6.8 is exactly 2x, not above
    assert rule.spiked(12, 7.0)
    assert 12 not in rule.losses  # a spike does not join the window
    rule.forget_after(8)  # a roll-back to step 8: steps 9 on are trained again
    assert sorted(rule.losses) == [7, 8]  # (6.8 at step 11 joined the window, step 6 left it)


def test_the_spike_rule_waits_for_history_and_is_off_at_factor_0():
    rule = SpikeRule(factor=1.5, window=100)
    assert not any(rule.spiked(s, 1.0) for s in range(1, 10))
    assert not rule.spiked(10, 100.0)  # 9 losses seen: fewer than min(window, 10)
    assert rule.spiked(11, 100.0)
    off = SpikeRule(factor=0.0, window=3)
    assert not any(off.spiked(s, float(10**s)) for s in range(1, 20))


def test_a_loss_scale_held_at_its_minimum_for_n_steps():
    rule = ScaleRule(steps=3, minimum=1.0)
    assert [rule.stuck(s) for s in (4.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0)] == [False, False, False, False,
                                                                           False, False, True]
    rule.reset()
    assert not rule.stuck(1.0)
    assert not any(ScaleRule(steps=0, minimum=1.0).stuck(1.0) for _ in range(10))  # off


def test_the_budget_counts_rollbacks_within_the_window():
    budget = RollbackBudget(most=2, window=100)
    budget.take(BadStep(10, "loss is not finite"))
    budget.take(BadStep(50, "loss is not finite"))
    with pytest.raises(RollbackLimit) as e:
        budget.take(BadStep(109, "loss is not finite"))
    message = str(e.value)
    assert "loss is not finite at step 109" in message and "roll-back 3 within 100 steps" in message
    assert "bad steps 10, 50" in message and "train.max_rollbacks=2" in message and "optim.lr" in message
    budget = RollbackBudget(most=2, window=100)
    for step in (10, 50, 110, 150, 210):  # never 3 within 100 steps
        budget.take(BadStep(step, "loss spike"))
    with pytest.raises(RollbackLimit):
        RollbackBudget(most=0, window=10).take(BadStep(1, "loss is not finite"))
