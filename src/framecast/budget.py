"""``CpuBudget``: stop ``fit`` once training has used a budget of process CPU seconds.

An equal budget of CPU time is a fair way to compare models on a machine whose cores are shared: wall time
counts the other processes' work, the process's CPU time (``time.process_time()``, all its threads, user and
system) counts only its own. Give it in a config::

    trainer:
      max_steps: -1
      callbacks:
        - class_path: framecast.budget.CpuBudget
          init_args: {seconds: 300}

The clock starts when training starts (after the data is set up and the model is built) and is read after
every training batch; the step that crosses the budget is the last. Validation during ``fit`` counts too
(set ``trainer.limit_val_batches: 0`` to leave it out).
"""

from __future__ import annotations

import time

import lightning as L

from framecast.errors import ConfigError


class CpuBudget(L.Callback):
    """Stop training after ``seconds`` of this process's CPU time.

    Args:
        seconds: the budget, ``> 0``.
    """

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ConfigError(f"trainer.callbacks CpuBudget: seconds must be > 0, got {seconds}")
        self.seconds = float(seconds)
        self.start: float | None = None
        self.used = 0.0

    def on_train_start(self, trainer, module) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.used = time.process_time() - self.start
        if self.used >= self.seconds:
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero:
            print(f"CPU budget: {self.used:.1f} of {self.seconds:g} process CPU seconds used in "
                  f"{trainer.global_step} optimizer steps")
