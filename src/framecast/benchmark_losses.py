"""``framecast benchmark-losses``: train the same model on the same data once per loss, then benchmark them.

    framecast benchmark-losses --config FILE --losses mse,l1,gdl,ssim,bits --trainer.max_steps N --out DIR
                               [--seed_everything S | --seeds 0,1,2] [--baselines copy_last,linear] [--clips N]
                               [--data.init_args.KEY VALUE] [--model.KEY VALUE] [--trainer.KEY VALUE] ...

Each loss (a name or an equally weighted mix such as ``mse+gdl``) gets one ``framecast fit`` of the config
with every ``--model.* / --data.* / --trainer.* / --seed_everything ...`` option given here, then
``--model.loss LOSS --trainer.max_epochs -1`` (and ``--model.head logistic_mixture`` when the loss contains
``bits``, which needs a per-pixel distribution), its logs and checkpoints in ``DIR/<loss>/``. Then the last
checkpoint of every run and the baselines are benchmarked side by side on the same test clips by
``framecast benchmark --ckpt_path LOSS=CKPT ... --config FILE --out DIR --seed_everything S`` with the
``--data.*`` options and the benchmark options given here (``--baselines``, ``--clips``, ...):
``DIR/results.md``, ``results.csv``, ``results.json`` and ``curves.png``.

Several seeds: ``--seeds 0,1,2`` trains every loss once per seed, in ``DIR/seed<S>/<loss>/``: the seed is the
run's ``--seed_everything`` (the model's initialisation, the teacher-forcing draws) and its
``--data.init_args.seed`` (the order and draws of the training stream), the latter only where that leaves the
validation and test clips unchanged (checked before training: moving digits draw them from ``eval_seed``; a video
folder shuffled into splits by ``seed`` would change them, and then only ``--seed_everything`` varies). Every
seed is benchmarked on the same clips, and the seeds of a loss are one candidate (``--ckpt_path LOSS=CKPT``
repeated): the report gives the mean and the standard deviation over the seeds and marks ties
(:mod:`framecast.evaluation.seeds`).

A rerun with the same ``--out`` resumes: a run whose ``last.ckpt`` reached ``--trainer.max_steps`` (with the
same loss and data seed) is not trained again, a shorter one continues from it; the benchmark always runs. Only
the loss, the data seed and the steps are compared: after changing any other option, give another ``--out``.

Older spellings, still accepted: ``--max-steps N`` (``--trainer.max_steps``), ``--seed S``
(``--seed_everything``), ``--batch-size B`` (``--data.init_args.batch_size``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from framecast.cli.data import option_groups
from framecast.errors import ConfigError, InputError, run_command

PROG = "framecast benchmark-losses"
DEFAULT_LOSSES = "mse,l1,gdl,ssim,bits"
ALIASES = {"--max-steps": "--trainer.max_steps", "--seed": "--seed_everything",
           "--batch-size": "--data.init_args.batch_size"}
# options of this command itself; those after --out go to the benchmark as they were given
OWN = ("--losses", "--out", "--seeds")
BENCHMARK_OPTIONS = ("--baselines", "--clips", "--fit-clips", "--split", "--metrics", "--device", "--lpips",
                     "--no-progress")
NO_VALUE = ("-h", "--help", "--no-progress")


def build_parser():
    from framecast.cli.grammar import tool_parser

    p = tool_parser(PROG, "Train the config's model once per loss (same data, same seed), then benchmark all of "
                          "them and the baselines on the same test clips. --model.* / --data.* / --trainer.* "
                          "options go to every fit; --data.* ones also to the benchmark. --seeds 0,1,2: every loss once per "
                          "seed, reported as mean ± std over the seeds with ties marked. A rerun with the same --out "
                          "keeps the finished runs. Older spellings: "
                          "--max-steps (--trainer.max_steps), --seed (--seed_everything), --batch-size "
                          "(--data.init_args.batch_size).")
    p.add_argument("--losses", type=str, default=DEFAULT_LOSSES,
                   help=f"comma-separated losses, each a name or a mix like mse+gdl (default {DEFAULT_LOSSES})")
    p.add_argument("--out", type=str | None, default=None, help="folder for the runs and the benchmark tables")
    p.add_argument("--seeds", type=str | None, default=None,
                   help="comma-separated seeds, e.g. 0,1,2: every loss trained once per seed, reported as the mean "
                        "and standard deviation over the seeds (instead of --seed_everything)")
    p.add_argument("--baselines", type=str | None, default=None,
                   help="baselines benchmarked beside the runs (default: the benchmark's, copy_last,linear)")
    p.add_argument("--clips", type=int | None, default=None, help="benchmark at most this many clips (default all)")
    p.add_argument("--fit-clips", type=int | None, default=None,
                   help="validation clips the benchmark fits Laplace scales on (default: the benchmark's)")
    p.add_argument("--split", type=str | None, default=None, help="split the benchmark evaluates (default test)")
    p.add_argument("--metrics", type=str | None, default=None,
                   help="comma-separated metrics the benchmark reports (default: every registered one)")
    p.add_argument("--device", type=str | None, default=None, help="the benchmark's device (default: cuda where available)")
    p.add_argument("--lpips", type=str | None, default=None, help="auto or off (the benchmark's --lpips)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars in the benchmark")
    return p


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(this command's own options, the benchmark's options, the grammar's options for every fit)``, each
    in the order given (``--key value`` pairs kept together)."""
    own: list[str] = []
    bench: list[str] = []
    grammar: list[str] = []
    for tokens in option_groups(argv, NO_VALUE):
        name = tokens[0].partition("=")[0]
        (own if name in OWN else bench if name in BENCHMARK_OPTIONS else grammar).extend(tokens)
    return own, bench, grammar


def benchmark_grammar(grammar: Sequence[str]) -> list[str]:
    """What the benchmark takes of the grammar's options, in their order: ``--config`` files and the ``--data`` /
    ``--data.*`` options (with their values)."""
    out: list[str] = []
    i = 0
    while i < len(grammar):
        a = grammar[i]
        name, eq, _ = a.partition("=")
        n = 1 if eq or not a.startswith("-") else 2
        if name in ("-c", "--config", "--data") or name.startswith("--data."):
            out.extend(grammar[i : i + n])
        i += n
    return out


def run_dir_name(loss: str) -> str:
    return loss.replace("/", "_").replace(" ", "")


def fit_argv(loss: str, run_dir: Path, options: Sequence[str], seed: int | None = None,
             data_seed: bool = False, resume: Path | None = None) -> list[str]:
    """The ``framecast fit`` arguments of one loss's run: the options given, then what makes it this run
    (``seed``: its ``--seed_everything``, and its ``--data.init_args.seed`` where ``data_seed``)."""
    from framecast.losses import parse_loss

    argv = ["fit", *options, "--model.loss", loss, "--trainer.max_epochs", "-1",
            "--trainer.default_root_dir", str(run_dir), "--checkpoint.dirpath", str(run_dir / "checkpoints")]
    if "bits" in parse_loss(loss):
        argv += ["--model.head", "logistic_mixture"]
    if seed is not None:
        argv += ["--seed_everything", str(seed)] + (["--data.init_args.seed", str(seed)] if data_seed else [])
    if resume is not None:
        argv += ["--ckpt_path", str(resume)]
    return argv


def finished_steps(ckpt: Path, loss: str, data_seed: int | None) -> int | None:
    """The training steps of an earlier run's ``last.ckpt`` (None: there is none). Raises where it was trained
    with another loss or data seed (another run in the same folder)."""
    import torch

    if not ckpt.is_file():
        return None
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    theirs = (saved.get("hyper_parameters") or {}).get("loss")
    seed = (saved.get("datamodule_hyper_parameters") or {}).get("seed")
    if theirs != loss or (data_seed is not None and seed != data_seed):
        raise InputError(f"{ckpt} was trained with loss {theirs!r} and data seed {seed}, not loss {loss!r}"
                         f"{'' if data_seed is None else f' and data seed {data_seed}'}: give another --out or "
                         f"remove that folder")
    return int(saved.get("global_step", 0))


def train(losses: list[str], max_steps: int, out: Path, options: Sequence[str], seed: int | None = None,
          data_seed: bool = False) -> dict[str, Path]:
    """One fit per loss in ``out/<loss>/`` (resumed or kept where an earlier one is there); ``{loss: last
    checkpoint}``."""
    from framecast.cli import run_lightning

    checkpoints = {}
    what = "" if seed is None else f", seed {seed}"
    for i, loss in enumerate(losses):
        run_dir = out / run_dir_name(loss)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        done = finished_steps(ckpt, loss, seed if data_seed else None)
        if done is not None and done > max_steps:
            raise InputError(f"{ckpt} was trained for {done} steps, more than --trainer.max_steps {max_steps}: give "
                             f"another --out or remove {run_dir}")
        if done == max_steps:
            print(f"\n=== [{i + 1}/{len(losses)}] loss {loss}{what}: {ckpt} already has {done} steps, kept", flush=True)
        else:
            how = f"continuing from step {done} of {ckpt}" if done is not None else f"training for {max_steps} steps"
            print(f"\n=== [{i + 1}/{len(losses)}] loss {loss}{what}: {how} -> {run_dir}", flush=True)
            run_lightning(fit_argv(loss, run_dir, options, seed, data_seed, ckpt if done is not None else None))
        if not ckpt.is_file():
            raise InputError(f"the run with loss {loss} wrote no checkpoint {ckpt}")
        print(f"checkpoint for loss {loss}{what}: {ckpt}", flush=True)
        checkpoints[loss] = ckpt
    return checkpoints


def check_seeds(text: str) -> list[int]:
    """``--seeds``: comma-separated distinct non-negative integers."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"--seeds: {part!r} is not a non-negative integer; give comma-separated seeds, e.g. "
                              f"--seeds 0,1,2")
        seeds.append(int(part))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice in {text!r}")
    return seeds


def evaluation_clips(grammar: Sequence[str], seed: int) -> str | None:
    """A digest of every validation and test clip of the data with ``--data.init_args.seed seed`` (None where
    the data module has no ``seed`` option)."""
    import hashlib
    import inspect

    from framecast.cli.grammar import instantiate_data, parse, tool_parser

    options = benchmark_grammar(grammar)
    dm = instantiate_data(parse(tool_parser(PROG, ""), options))
    if dm is None or "seed" not in inspect.signature(type(dm).__init__).parameters:
        return None
    dm = instantiate_data(parse(tool_parser(PROG, ""), [*options, "--data.init_args.seed", str(seed)]))
    digest = hashlib.sha256()
    for stage, split in (("validate", "val"), ("test", "test")):
        dm.setup(stage)
        for batch in getattr(dm, f"{split}_dataloader")():
            for key in ("context", "target"):
                digest.update(batch[key].numpy().tobytes())
    return digest.hexdigest()


def data_seed_keeps_clips(grammar: Sequence[str], seeds: Sequence[int]) -> bool:
    """Whether every seed as ``--data.init_args.seed`` gives the same validation and test clips."""
    first = evaluation_clips(grammar, seeds[0])
    return first is not None and all(evaluation_clips(grammar, s) == first for s in seeds[1:])


def check_losses(text: str) -> list[str]:
    from framecast.losses import parse_loss

    losses = [x.strip() for x in text.split(",") if x.strip()]
    if not losses:
        raise ConfigError("--losses is empty")
    for loss in losses:
        try:
            parse_loss(loss, field="--losses")
        except ValueError as e:
            raise ConfigError(str(e)) from e
    if len(set(losses)) != len(losses):
        raise ConfigError(f"--losses: a loss is listed twice in {text!r}")
    return losses


def benchmark_losses(argv: Sequence[str] | None = None) -> int:
    from framecast.cli.grammar import parse, rewrite_aliases

    argv = rewrite_aliases(list(sys.argv[1:] if argv is None else argv), ALIASES)
    cfg = parse(build_parser(), argv)
    _, bench, grammar = split_argv(argv)
    if not any(a.partition("=")[0] in ("-c", "--config") for a in grammar):
        raise ConfigError(f"--config FILE is required: the fit config every loss trains (see {PROG} --help)")
    if not cfg.out:
        raise ConfigError(f"--out DIR is required: the folder for the runs and the tables (see {PROG} --help)")
    losses = check_losses(cfg.losses)
    max_steps = cfg.trainer.max_steps
    if max_steps is None or max_steps < 1:
        raise ConfigError(f"trainer.max_steps must be >= 1 (--trainer.max_steps N: training steps per loss), "
                          f"got {max_steps}")
    out = Path(cfg.out)
    if cfg.seeds is None:
        checkpoints = {loss: [ckpt] for loss, ckpt in train(losses, max_steps, out, grammar).items()}
        seed = cfg.seed_everything
        seed = str(seed).lower() if isinstance(seed, bool) else str(seed)
    else:
        if any(a.partition("=")[0] == "--seed_everything" for a in grammar):
            raise ConfigError("give --seeds or --seed_everything (--seed), not both")
        seeds = check_seeds(cfg.seeds)
        data_seed = data_seed_keeps_clips(grammar, seeds)
        print(f"seeds {', '.join(map(str, seeds))}: each sets --seed_everything"
              + (" and --data.init_args.seed (the validation and test clips are the same for every seed)"
                 if data_seed else " only (--data.init_args.seed would change this data's validation or test "
                                   "clips, or the data has no seed option)"), flush=True)
        checkpoints = {loss: [] for loss in losses}
        for s in seeds:
            for loss, ckpt in train(losses, max_steps, out / f"seed{s}", grammar, s, data_seed).items():
                checkpoints[loss].append(ckpt)
        seed = str(seeds[0])
    bench_argv = ["--ckpt_path", *(f"{loss}={p}" for loss, ps in checkpoints.items() for p in ps),
                  *benchmark_grammar(grammar), "--out", str(out), "--seed_everything", seed, *bench]
    n = sum(map(len, checkpoints.values()))
    print(f"\n=== benchmarking {n} runs -> {out}", flush=True)
    code = benchmark_command().main(bench_argv)
    if code == 0:
        for loss, ckpts in checkpoints.items():
            for ckpt in ckpts:
                print(f"benchmarked {ckpt} (loss {loss})")
    return code


def benchmark_command():
    """The module of ``framecast benchmark`` (as the dispatcher finds it)."""
    import importlib

    from framecast.cli import COMMANDS

    return importlib.import_module(COMMANDS["benchmark"][0])


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast benchmark-losses`` with ``argv`` (without the command name); return the exit code."""
    return run_command(PROG, lambda: benchmark_losses(argv))


if __name__ == "__main__":
    sys.exit(main())
