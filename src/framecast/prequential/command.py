"""``framecast codelength``: compare predictors by the prequential codelength of the config's training stream.

    framecast codelength --config FILE [--blocks B1,B2,... | --first N --growth G --num-blocks K]
                         [--predictors A,B,...] [--baselines copy_last,linear] --out DIR
                         [--epochs E] [--min-steps S] [--validations V] [--val-fraction F] [--device D]
                         [--data.init_args.KEY VALUE] [--model.KEY VALUE] [--trainer.KEY VALUE] [--seed_everything N]

The stream (:mod:`framecast.prequential.stream`) is cut into blocks; block 0 is coded uniformly, and for
each block ``k >= 1`` every predictor (a registered model: the config's model section with ``model.model``
replaced; default the config's model) gets a fresh model (the same seed) trained by a normal ``framecast
fit`` on the clips transmitted before the block, in ``DIR/<predictor>/block_<k>/`` with every ``--model.* /
--trainer.* / --seed_everything`` option given here, and codes the block (:mod:`framecast.prequential.coding`);
every baseline codes it with Laplace scales fitted on the transmitted clips. After each block
``DIR/codelength.json``, ``codelength.md`` and ``codelength.png`` are rewritten (:mod:`~framecast.prequential.report`)
and at the end the ranking by total bits is printed.

The training rule (:class:`~framecast.prequential.blocks.Recipe`): ``steps = ceil(epochs x train clips / (batch size x processes))``, at
least ``--min-steps``, at most ``trainer.max_steps`` (the config's budget for the whole data; none where it is
-1), rounded down to a multiple of the validation interval (``steps // --validations``). The last
``round(--val-fraction x seen)`` transmitted clips (at least 1) are held out; the model validates on them
``--validations`` times and the checkpoint with the lowest ``val/loss`` codes the block (early stopping).

Resumable: a block's result is ``DIR/<predictor>/block_<k>/result.json``; a rerun with the same settings
loads the blocks done, resumes an interrupted fit from its ``last.ckpt`` (``--ckpt_path last``) and goes
on. ``--trainer.devices N --trainer.strategy ddp`` apply to every block's fit (Lightning runs the command
once per process; every process codes the same clips and the first one writes the files).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framecast.cli.data import option_groups
from framecast.errors import ConfigError, InputError, run_command
from framecast.prequential.blocks import BaselineEntry, Context, ModelEntry, Recipe, is_main, run_blocks, say

PROG = "framecast codelength"
DEFAULT_BASELINES = "copy_last,linear"
OWN = ("--blocks", "--first", "--growth", "--num-blocks", "--predictors", "--baselines", "--out", "--epochs",
       "--min-steps", "--validations", "--val-fraction", "--device")
NO_VALUE = ("-h", "--help")
DEFINITION = (
    "Every frame of every clip is coded. Block 0: the uniform code, 8 bits per sub-pixel. Block k >= 1: the "
    "first frame of each clip uniformly (8 bits per sub-pixel), every later frame t with the predictor's "
    "distribution given the true frames 1..t-1 of its clip, from a model trained only on blocks 0..k-1: a "
    "logistic-mixture head's own distribution, exactly; for a deterministic model or a baseline a discretized "
    "Laplace around its prediction, one scale per frame position, fitted by maximum likelihood on transmitted "
    "clips (the model's held-out tail; every transmitted clip for a baseline). The total is the length of a code "
    "of the whole stream that a receiver decodes by training the same models on what it has decoded."
)


def build_parser():
    from framecast.cli.grammar import tool_parser

    p = tool_parser(PROG, "Prequential codelength of the config's training stream for predictors and baselines: "
                          "block 0 coded uniformly, block k by a fresh model trained on blocks 0..k-1 (a framecast "
                          "fit per block under --out). --model.* / --trainer.* options go to every fit.")
    p.add_argument("--blocks", type=str | None, default=None, help="comma-separated block sizes in clips, e.g. 8,8,16,32")
    p.add_argument("--first", type=int | None, default=None, help="clips in block 0 (default 8)")
    p.add_argument("--growth", type=float | None, default=None,
                   help="clips transmitted grow by this factor per block (default 2: blocks N, N, 2N, 4N, ...)")
    p.add_argument("--num-blocks", type=int | None, default=None, help="blocks with --first/--growth (default 5)")
    p.add_argument("--predictors", type=str | None, default=None,
                   help="comma-separated registered models (default: the config's model.model)")
    p.add_argument("--baselines", type=str, default=DEFAULT_BASELINES,
                   help=f"comma-separated baselines, or none (default {DEFAULT_BASELINES})")
    p.add_argument("--out", type=str | None, default=None, help="folder for the runs and codelength.{json,md,png}")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the training clips per fit (default 10)")
    p.add_argument("--min-steps", type=int, default=10, help="fewest training steps per fit (default 10)")
    p.add_argument("--validations", type=int, default=4, help="validations on the held-out tail per fit (default 4)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the transmitted clips held out for early stopping (default 0.1, at least 1 clip)")
    p.add_argument("--device", type=str | None, default=None, help="device that codes the blocks (default: cuda "
                                                                  "where available and the trainer uses it)")
    return p


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(this command's own options, the grammar's options)``, each in the order given."""
    own: list[str] = []
    grammar: list[str] = []
    for tokens in option_groups(argv, NO_VALUE):
        (own if tokens[0].partition("=")[0] in OWN else grammar).extend(tokens)
    return own, grammar


def without_data(grammar: Sequence[str]) -> list[str]:
    """The grammar's options less ``--data`` / ``--data.*`` (their effect is in the resolved data section)."""
    out: list[str] = []
    i = 0
    while i < len(grammar):
        a = grammar[i]
        name, eq, _ = a.partition("=")
        n = 1 if eq or not a.startswith("-") else 2
        if not (name == "--data" or name.startswith("--data.")):
            out.extend(grammar[i : i + n])
        i += n
    return out


def names(text: str | None, option: str) -> list[str]:
    if text is None or text.strip().lower() in ("", "none"):
        return []
    out = [x.strip() for x in text.split(",") if x.strip()]
    if len(set(out)) != len(out):
        raise ConfigError(f"{option}: a name is listed twice in {text!r}")
    return out


def processes(trainer: dict[str, Any]) -> int:
    """Processes of a fit: ``trainer.devices`` (a number, a list, or auto/-1: the GPUs) x ``num_nodes``."""
    import torch

    devices, nodes = trainer.get("devices", "auto"), int(trainer.get("num_nodes") or 1)
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif str(devices).strip().lstrip("-").isdigit() and int(devices) > 0:
        n = int(devices)
    else:
        gpu = str(trainer.get("accelerator") or "auto").lower() in ("auto", "gpu", "cuda")
        n = torch.cuda.device_count() if gpu and torch.cuda.is_available() else 1
    return max(1, n) * max(1, nodes)


def normalized(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def check_plan(path: Path, plan: dict[str, Any], write: bool) -> None:
    """``path`` holds ``plan`` (written when absent): a rerun into a folder must keep its settings."""
    plan = normalized(plan)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != plan:
            keys = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
            raise InputError(f"{path} was written with other settings ({', '.join(keys)} differ): rerun with the "
                             f"same ones to continue that run, or give another --out")
    elif write:
        from framecast.prequential.report import write_atomic

        write_atomic(path, json.dumps(plan, indent=2, sort_keys=True) + "\n")


def coding_device(trainer: dict[str, Any], given: str | None) -> str:
    import torch

    if given:
        return given
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK') or 0)}"
    return "cpu"


def codelength(argv: Sequence[str] | None = None) -> int:
    from framecast.cli.data import has_config
    from framecast.cli.grammar import instantiate_data, parse, section_dict
    from framecast.models import BASELINES, MODELS
    from framecast.prequential import report
    from framecast.prequential.stream import block_ends, build_stream

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse(build_parser(), argv)
    _, grammar = split_argv(argv)
    if not has_config(grammar):
        raise ConfigError(f"--config FILE is required: the fit config whose data and model are coded (see {PROG} --help)")
    if not cfg.out:
        raise ConfigError(f"--out DIR is required: the folder for the runs and codelength.{{json,md,png}} (see {PROG} --help)")
    if cfg.ckpt_path:
        raise ConfigError("--ckpt_path: codelength trains a fresh model per block and takes no checkpoint")
    sizes = None
    if cfg.blocks is not None:
        try:
            sizes = [int(x) for x in cfg.blocks.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--blocks must be comma-separated integers, got {cfg.blocks!r}") from None
    if sizes is not None and cfg.num_blocks is not None:
        raise ConfigError("give --blocks B1,B2,... or --first N --growth G --num-blocks K, not both")
    ends = block_ends(sizes, cfg.first, cfg.growth, cfg.num_blocks)

    data = section_dict(cfg, "data")
    if not data.get("class_path"):
        raise ConfigError("the --config file has no data: section (the stream is its training split)")
    dm = instantiate_data(cfg)
    stream = build_stream(dm)
    if stream.length is not None and stream.length < ends[-1]:
        raise InputError(f"the stream has {stream.length} clips ({stream.description}), the blocks need {ends[-1]}: "
                         f"give fewer or smaller blocks, or more data")

    model = section_dict(cfg, "model")
    predictors = names(cfg.predictors, "--predictors") if cfg.predictors is not None else [model.get("model", "convlstm")]
    baselines = names(cfg.baselines, "--baselines")
    for name in predictors:
        if name not in MODELS:
            hint = " (a baseline: give it in --baselines)" if name in BASELINES else ""
            raise ConfigError(f"--predictors: unknown model {name!r}{hint}; registered models: {sorted(MODELS)}")
    for name in baselines:
        if name not in BASELINES:
            raise ConfigError(f"--baselines: unknown baseline {name!r}; baselines: {sorted(BASELINES)}")
    if set(predictors) & set(baselines) or not predictors + baselines:
        raise ConfigError("--predictors and --baselines must name different things, and at least one")
    options = {}
    for name in predictors:  # every model builds before anything trains
        options[name] = {k: v for k, v in {**model, "model": name}.items() if k != "channels"}
        _check_model(name, {**options[name], "channels": stream.channels})

    trainer = section_dict(cfg, "trainer")
    cap = trainer.get("max_steps")
    recipe = Recipe(cfg.epochs, cfg.min_steps, cap if cap and cap > 0 else None, cfg.validations,
                    cfg.val_fraction, int(dm.batch_size), processes(trainer))
    seed = cfg.seed_everything
    out = Path(cfg.out)
    device = coding_device(trainer, cfg.device)
    ctx = Context(stream, ends, out, int(dm.batch_size), recipe, data, without_data(grammar))
    from framecast.cli import run_lightning

    entries = [ModelEntry(n, options[n], device, run_lightning) for n in predictors]
    entries += [BaselineEntry(n, device) for n in baselines]
    main_process = is_main()
    check_plan(out / "stream.json", {"data": data, "ends": ends, "seed": seed}, main_process)
    for e in entries:
        check_plan(out / e.name / "plan.json", {**e.plan(), "recipe": recipe.describe(), "seed": seed}, main_process)

    blocks = [b - a for a, b in zip([0] + ends, ends)]
    c, (h, w) = stream.channels, stream.size
    stream_info = {"data": data["class_path"], "description": stream.description, "kind": stream.kind,
                   "clips": ends[-1], "frames_per_clip": stream.frames_per_clip, "frame": [c, h, w],
                   "blocks": blocks, "ends": ends, "seed": seed, **stream.extra}
    recipe_info = {**recipe.describe(), "processes": recipe.processes, "rule": recipe.rule(seed)}
    kinds = {e.name: e.kind for e in entries}
    say(f"prequential codelength of {ends[-1]} clips ({stream.description}) in blocks {blocks}: "
        f"{', '.join(kinds)} -> {out}")

    def results(records: dict[str, list]) -> dict:
        preds = {n: {"kind": kinds[n], "codelength": _codelength(recs), "blocks": recs} for n, recs in records.items()}
        return report.results(stream_info, recipe_info, preds, DEFINITION, ["framecast", "codelength", *argv])

    def write(records: dict[str, list]) -> None:
        if main_process and is_main():
            report.write(results(records), out)

    records = run_blocks(ctx, entries, on_block=write)
    if is_main():
        res = results(records)
        print("\n" + report.totals_table(res))
        report.print_ranking(res)
        for p in (out / f for f in report.FILES):
            print(f"wrote {p}")
    return 0


def _codelength(records: list[dict]) -> str:
    later = [r["codelength"] for r in records[1:]]
    if not later:
        return "uniform (8 bits per sub-pixel)"
    kind = later[-1].split(",")[0]
    return f"block 0 uniform (8 bits per sub-pixel); later blocks: {kind}"


def _check_model(name: str, options: dict[str, Any]) -> None:
    from framecast.errors import bad_input_cause
    from framecast.module import FramePredictionModule

    try:
        FramePredictionModule(**options)
    except (ValueError, TypeError) as e:
        if bad_input_cause(e) is not None:
            raise
        raise ConfigError(f"--predictors {name} (the config's model section with model.model {name}): {e}") from e


def _until_sigterm(argv: Sequence[str] | None) -> int:
    """:func:`codelength`, where a SIGTERM that stops a block's fit is an interruption, not a success: Lightning
    raises it as a ``SystemExit`` without a code, which would read as exit code 0."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        return codelength(argv)
    except SIGTERMException:
        print(f"{PROG}: stopped by SIGTERM; the blocks done are kept: rerun the same command to continue",
              file=sys.stderr)
        return 128 + 15


def main(argv: list[str] | None = None) -> int:
    """Run ``framecast codelength`` with ``argv`` (without the command name); return the exit code."""
    return run_command(PROG, lambda: _until_sigterm(argv))


if __name__ == "__main__":
    sys.exit(main())
