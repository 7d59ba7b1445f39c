"""The ``framecast speed`` command: its options (the shared command grammar) and ``main(argv)``.

    framecast speed --config FILE [--model.KEY V] [--data.init_args.KEY V] [--trainer.precision 32|bf16-mixed]
                    [--steps N] [--warmup W] [--inference-batch-size B] [--extra-precision P] [--compile]
                    [--compile-mode M] [--channels-last] [--device cpu|cuda] [--threads N] [--no-reference]
                    [--no-inference] [--conv-reps R] [--json OUT] [--no-progress] [--seed_everything N]

The parser is :func:`framecast.cli.grammar.tool_parser`'s, so ``--config`` takes the ``framecast fit``
config as it is. The model is its ``model:`` section (``model.channels`` linked to the data's, as fit links
them); the input shape comes from the data module its ``data:`` section makes (context and horizon frames,
``size``/``canvas``, channels; for a video config frames = seconds x fps), built without decoding any data;
the training batch is ``data.init_args.batch_size``; the precision ``trainer.precision`` (``32`` or
``bf16-mixed``), with ``trainer.gradient_clip_val`` / ``gradient_clip_algorithm`` applied as fit applies
them. Old spellings still work: ``--precision``, ``--batch-size``, ``--seed`` (see :data:`ALIASES`).
Bad options raise :class:`~framecast.errors.ConfigError` naming the field (exit code 2 from the dispatcher).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from framecast.errors import ConfigError, InputError

PROG = "framecast speed"
DESCRIPTION = (
    "Training step time, clips/s and frames/s, inference clips/s, peak memory, FLOPs per clip and achieved "
    "FLOP/s of a model and input size, next to a plain float32 reference ConvLSTM and the machine's measured "
    "peak on the model's largest convolution, all timed in the same interleaved rounds. The model comes from "
    "the config's model section, the input shape (random input, no data is read) from its data section. JSON "
    "to stdout (and --json OUT), a table to stderr."
)
EPILOG = (
    "Examples: --config configs/moving_mnist_convlstm.yaml --trainer.precision bf16-mixed "
    "--data.init_args.batch_size 16 --model.hidden [32,32] --data.init_args.context_frames 4 (values are YAML). "
    "Old spellings still work: --precision (= --trainer.precision), --batch-size (= --data.init_args.batch_size), "
    "--seed (= --seed_everything), --data.KEY (= --data.init_args.KEY)."
)
ALIASES = {"--precision": "--trainer.precision", "--batch-size": "--data.init_args.batch_size",
           "--seed": "--seed_everything"}
# Lightning's names (and its synonyms) of the precisions framecast speed times -> the name it reports.
PRECISION_NAMES = {"32": "32", "32-true": "32", "bf16-mixed": "bf16-mixed", "bf16": "bf16-mixed"}
COMPILE_MODES = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
DEFAULT_BATCH_SIZE = 16  # where the data module has no batch_size


def build_parser():
    """The shared grammar's parser with ``framecast speed``'s own options."""
    from framecast.cli.grammar import tool_parser

    p = tool_parser(PROG, DESCRIPTION)
    p.epilog = EPILOG
    p.add_argument("--inference-batch-size", type=int | None, default=None,
                   help="inference batch (null: the training batch, data.init_args.batch_size)")
    p.add_argument("--extra-precision", type=str, action="append", default=[],
                   help="also time framecast at this precision (32 or bf16-mixed) in the same rounds, reported "
                        "under 'extra'; repeatable")
    p.add_argument("--steps", type=int, default=5, help="counted rounds")
    p.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the predictor's recurrent step (as model.compile: true does in "
                        "training) (flag, type: bool)")
    p.add_argument("--compile-mode", type=COMPILE_MODES | None, default=None,
                   help="torch.compile mode, implies --compile (reduce-overhead: CUDA graphs)")
    p.add_argument("--channels-last", action="store_true",
                   help="convolution weights and inputs in channels-last memory format (flag, type: bool)")
    p.add_argument("--device", type=Literal["cpu", "cuda"], default="cpu", help="where to time")
    p.add_argument("--threads", type=int | None, default=None, help="torch CPU threads (null: torch's own choice)")
    p.add_argument("--no-reference", action="store_true",
                   help="do not time the reference ConvLSTM (flag, type: bool)")
    p.add_argument("--no-inference", action="store_true", help="time training only (flag, type: bool)")
    p.add_argument("--conv-reps", type=int, default=2, help="convolution-peak calls per round")
    p.add_argument("--json", type=str | None, default=None, metavar="OUT", help="also write the JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (flag, type: bool)")
    return p


def _precision_problem(field: str, value: Any) -> str:
    given = "the config's value" if value is None else repr(value)
    return (f"{field}: framecast speed times the precisions 32 and bf16-mixed (Lightning's names), got {given}; "
            f"use {'--trainer.precision' if field == 'trainer.precision' else '--extra-precision'} 32 or bf16-mixed")


def check_precision(value: Any, field: str = "trainer.precision") -> str:
    """``value`` (a Lightning precision; ``None``: Lightning's default, 32) as ``framecast speed`` names it."""
    if value is None:
        return "32"
    name = PRECISION_NAMES.get(str(value))
    if name is None:
        raise ConfigError(_precision_problem(field, value))
    return name


def parse_options(argv: Sequence[str]):
    """The parsed config of ``argv`` (old spellings rewritten); a bad ``trainer.precision`` is named as such."""
    from framecast.cli.grammar import parse, rewrite_aliases

    parser = build_parser()
    try:
        return parse(parser, argv, ALIASES)
    except ConfigError as e:
        if '"trainer.precision"' in str(e):
            from framecast.cli.data import flag_values

            given = (flag_values(rewrite_aliases(argv, ALIASES), "--trainer.precision") or [None])[-1]
            raise ConfigError(_precision_problem("trainer.precision", given)) from e
        raise


def input_dims(dm) -> dict[str, int]:
    """``{"context", "horizon", "channels", "height", "width"}`` of a data module, read from its settings
    (``context_frames``, ``horizon_frames``, ``channels``, ``size``), without decoding any data."""
    try:
        height, width = (int(v) for v in dm.size)
        return {"context": int(dm.context_frames), "horizon": int(dm.horizon_frames), "channels": int(dm.channels),
                "height": height, "width": width}
    except (AttributeError, TypeError, ValueError) as e:
        raise ConfigError(
            f"data: framecast speed takes the input shape from the data module's context_frames, horizon_frames, "
            f"channels and size (H, W) before any data is read; {type(dm).__name__} does not give them ({e}). "
            f"Set them in data.init_args (e.g. --data.init_args.size [64,64])") from e


def _seed(value: Any) -> int:
    if value is True:  # Lightning's meaning: a random seed
        return random.SystemRandom().randrange(2**31)
    return 0 if value is False or value is None else int(value)


def _config_name(cfg) -> str | None:
    paths = cfg.get("config") or []
    return ", ".join(str(p) for p in paths) if paths else None


def setup(cfg):
    """``(Settings, model hyper-parameters, input dims)`` of a parsed config, every option checked."""
    from framecast.cli.grammar import instantiate_data, section_dict
    from framecast.profiling.measure import Settings

    trainer = section_dict(cfg, "trainer")
    precision = check_precision(trainer.get("precision"))
    extra = [check_precision(p, "--extra-precision") for p in cfg.get("extra_precision") or []]
    steps, warmup, reps = cfg.get("steps"), cfg.get("warmup"), cfg.get("conv_reps")
    if steps < 1 or warmup < 0 or reps < 1:
        raise ConfigError(f"--steps and --conv-reps must be >= 1 and --warmup >= 0, got --steps {steps}, "
                          f"--warmup {warmup}, --conv-reps {reps}")
    dm = instantiate_data(cfg)
    if dm is None:
        raise ConfigError("data: framecast speed takes the input shape from the data section; give --config FILE "
                          "(a framecast fit config with a data: section) or --data CLASS")
    dims = input_dims(dm)
    model_hp = section_dict(cfg, "model")
    model_hp["channels"] = dims["channels"]  # linked to the data's channels, as framecast fit links them
    batch = (section_dict(cfg, "data").get("init_args") or {}).get("batch_size", DEFAULT_BATCH_SIZE)
    infer_batch = cfg.get("inference_batch_size")
    if batch < 1 or (infer_batch is not None and infer_batch < 1):
        raise ConfigError(f"data.init_args.batch_size and --inference-batch-size must be >= 1, got {batch} "
                          f"and {infer_batch}")
    s = Settings(
        config=_config_name(cfg), batch_size=int(batch), inference_batch_size=int(infer_batch or batch),
        precision=precision, extra_precision=extra, steps=steps, warmup=warmup,
        compile=bool(cfg.get("compile") or cfg.get("compile_mode") or model_hp.get("compile")),
        compile_mode=cfg.get("compile_mode"), channels_last=bool(cfg.get("channels_last")),
        device=cfg.get("device"), threads=cfg.get("threads"), no_reference=bool(cfg.get("no_reference")),
        no_inference=bool(cfg.get("no_inference")), conv_reps=reps, seed=_seed(cfg.get("seed_everything")),
        json=cfg.get("json"), no_progress=bool(cfg.get("no_progress")),
        gradient_clip_val=trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=trainer.get("gradient_clip_algorithm"),
    )
    return s, model_hp, dims


def main(argv: list[str] | None = None) -> int:
    import torch

    from framecast.profiling.measure import measure
    from framecast.profiling.report import table

    argv = list(sys.argv[1:] if argv is None else argv)
    s, model_hp, dims = setup(parse_options(argv))
    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        result = measure(s, model_hp, dims, command=f"{PROG} " + " ".join(argv))
    finally:  # leave the process as it was (the command may run inside a test session)
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
    text = json.dumps(result, indent=2, default=str)
    print(text)
    print(table(result), file=sys.stderr)
    if s.json:
        out = Path(s.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        except OSError as e:
            raise InputError(f"--json {out}: cannot write the result there ({e.strerror or e})") from e
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
