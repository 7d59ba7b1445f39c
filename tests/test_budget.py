"""``CpuBudget``: fit stops once the process has used its budget of CPU seconds."""

import time
from types import SimpleNamespace

import pytest

from framecast.budget import CpuBudget
from framecast.errors import ConfigError


def burn(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(1000))


def test_stops_after_the_budget_and_not_before():
    budget = CpuBudget(seconds=0.2)
    trainer = SimpleNamespace(should_stop=False)
    budget.on_train_start(trainer, None)
    budget.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop and budget.used < 0.2
    burn(0.25)
    budget.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.should_stop and budget.used >= 0.2


def test_a_budget_must_be_positive():
    with pytest.raises(ConfigError, match="seconds must be > 0"):
        CpuBudget(seconds=0)
