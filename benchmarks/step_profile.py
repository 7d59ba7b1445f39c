"""Where a training step's time goes: convolutions, casts and copies, the optimizer, and the rest (pointwise
gate arithmetic, autograd's own work).

    python benchmarks/step_profile.py --config configs/moving_mnist_convlstm.yaml --trainer.precision bf16-mixed \\
        [--data.init_args.batch_size 16] [--threads 1] [framecast speed's other options]

The step is the one ``framecast speed`` times (Lightning's precision plugin, the module's optimizer), built
from the same options; after one warm-up step, one step runs under ``torch.profiler``. Shares of that step's
wall time: ``convolution`` = self time of the convolution ops (forward and backward), ``casts and copies`` =
self time of ``aten::_to_copy`` / ``aten::copy_`` (autocast's casts, ``clone``), ``optimizer`` = the whole
parameter update (``torch.optim.adam.adam``, which ``AdamW.step`` runs after the forward/backward
closure) and ``zero_grad``, ``rest`` = what remains. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

CASTS = ("aten::_to_copy", "aten::copy_")


def main(argv: list[str]) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from framecast.precision import cpu_bf16_features, cpu_name
    from framecast.profiling import command
    from framecast.profiling.harness import random_batch
    from framecast.profiling.measure import build_module
    from framecast.profiling.training import attach, configure_optimizer, lightning_trainer, train_step_fn

    s, model_hp, dims = command.setup(command.parse_options(argv))
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    module = build_module(model_hp)
    trainer = lightning_trainer(s.precision, "cpu", s.gradient_clip_val, s.gradient_clip_algorithm)
    opt, sched = configure_optimizer(module, 10)
    attach(module, trainer)
    step = train_step_fn(module, trainer, random_batch(s.batch_size, dims, torch.device("cpu"), s.seed), opt, sched)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    import torch.optim.adam as adam_module

    update = adam_module.adam  # the parameter update Adam/AdamW.step runs after the closure

    def marked(*args, **kwargs):
        with torch.profiler.record_function("optimizer update"):
            return update(*args, **kwargs)

    adam_module.adam = marked
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower()) / 1e6
    casts = sum(e.self_cpu_time_total for e in events if e.key in CASTS) / 1e6
    optimizer = sum(e.cpu_time_total for e in events if e.key in ("optimizer update", "Optimizer.zero_grad")) / 1e6
    share = {"convolution": conv / wall, "casts and copies": casts / wall, "optimizer": optimizer / wall}
    share["rest"] = 1 - sum(share.values())
    print(json.dumps({"model": model_hp.get("model"), "precision": s.precision, "batch_size": s.batch_size,
                      "threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_bf16": cpu_bf16_features(),
                      "step_s_profiled": wall, "share": share}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
