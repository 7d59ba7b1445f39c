"""``framecast benchmark-losses``: train the same model on the same data once per loss, then benchmark them.

    framecast benchmark-losses --config FILE --losses mse,l1,gdl,ssim,bits --trainer.max_steps N --out DIR
                               [--seed_everything S] [--baselines copy_last,linear] [--clips N]
                               [--data.init_args.KEY VALUE] [--model.KEY VALUE] [--trainer.KEY VALUE] ...

Each loss (a name or an equally weighted mix such as ``mse+gdl``) gets one ``framecast fit`` of the config
with every ``--model.* / --data.* / --trainer.* / --seed_everything ...`` option given here, then
``--model.loss LOSS --trainer.max_epochs -1`` (and ``--model.head logistic_mixture`` when the loss contains
``bits``, which needs a per-pixel distribution), its logs and checkpoints in ``DIR/<loss>/``. Then the last
checkpoint of every run and the baselines are benchmarked side by side on the same test clips by
``framecast benchmark --ckpt_path LOSS=CKPT ... --config FILE --out DIR --seed_everything S`` with the
``--data.*`` options and the benchmark options given here (``--baselines``, ``--clips``, ...):
``DIR/results.md``, ``results.csv``, ``results.json`` and ``curves.png``.

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
OWN = ("--losses", "--out")
BENCHMARK_OPTIONS = ("--baselines", "--clips", "--fit-clips", "--split", "--metrics", "--device", "--lpips",
                     "--no-progress")
NO_VALUE = ("-h", "--help", "--no-progress")


def build_parser():
    from framecast.cli.grammar import tool_parser

    p = tool_parser(PROG, "Train the config's model once per loss (same data, same seed), then benchmark all of "
                          "them and the baselines on the same test clips. --model.* / --data.* / --trainer.* "
                          "options go to every fit; --data.* ones also to the benchmark. Older spellings: "
                          "--max-steps (--trainer.max_steps), --seed (--seed_everything), --batch-size "
                          "(--data.init_args.batch_size).")
    p.add_argument("--losses", type=str, default=DEFAULT_LOSSES,
                   help=f"comma-separated losses, each a name or a mix like mse+gdl (default {DEFAULT_LOSSES})")
    p.add_argument("--out", type=str | None, default=None, help="folder for the runs and the benchmark tables")
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


def fit_argv(loss: str, run_dir: Path, options: Sequence[str]) -> list[str]:
    """The ``framecast fit`` arguments of one loss's run: the options given, then what makes it this run."""
    from framecast.losses import parse_loss

    argv = ["fit", *options, "--model.loss", loss, "--trainer.max_epochs", "-1",
            "--trainer.default_root_dir", str(run_dir), "--checkpoint.dirpath", str(run_dir / "checkpoints")]
    if "bits" in parse_loss(loss):
        argv += ["--model.head", "logistic_mixture"]
    return argv


def train(losses: list[str], max_steps: int, out: Path, options: Sequence[str]) -> dict[str, Path]:
    """One fit per loss; ``{loss: last checkpoint}``."""
    from framecast.cli import run_lightning

    checkpoints = {}
    for i, loss in enumerate(losses):
        run_dir = out / run_dir_name(loss)
        print(f"\n=== [{i + 1}/{len(losses)}] training with loss {loss} for {max_steps} steps -> {run_dir}", flush=True)
        run_lightning(fit_argv(loss, run_dir, options))
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise InputError(f"the run with loss {loss} wrote no checkpoint {ckpt}")
        print(f"checkpoint for loss {loss}: {ckpt}", flush=True)
        checkpoints[loss] = ckpt
    return checkpoints


def check_losses(text: str) -> list[str]:
    from framecast.losses import parse_loss

    losses = [x.strip() for x in text.split(",") if x.strip()]
    if not losses:
        raise ConfigError("--losses is empty")
    for loss in losses:
        try:
            parse_loss(loss)
        except ValueError as e:
            raise ConfigError(f"--losses: {e}") from e
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
    checkpoints = train(losses, max_steps, out, grammar)
    seed = cfg.seed_everything
    seed = str(seed).lower() if isinstance(seed, bool) else str(seed)
    bench_argv = ["--ckpt_path", *(f"{loss}={p}" for loss, p in checkpoints.items()), *benchmark_grammar(grammar),
                  "--out", str(out), "--seed_everything", seed, *bench]
    print(f"\n=== benchmarking {len(checkpoints)} runs -> {out}", flush=True)
    code = benchmark_command().main(bench_argv)
    for loss, ckpt in checkpoints.items():
        print(f"wrote {ckpt} (loss {loss})")
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
