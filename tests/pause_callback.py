"""Test helper (imported by the ``framecast`` processes that tests start, via PYTHONPATH): a callback that,
when ``FRAMECAST_TEST_PAUSE_AT_STEP`` is set, stops the run before that optimizer step forever (after the
checkpoints of the previous step were written) and says so by creating ``FRAMECAST_TEST_PAUSE_MARKER``,
so that a test can kill the process at a known point."""

import os
import time
from pathlib import Path

import lightning as L


class PauseAt(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = os.environ.get("FRAMECAST_TEST_PAUSE_AT_STEP")
        if step is None or trainer.global_step != int(step):
            return
        Path(os.environ["FRAMECAST_TEST_PAUSE_MARKER"]).write_text(f"{trainer.global_step} {batch_idx}")
        while True:
            time.sleep(0.05)
