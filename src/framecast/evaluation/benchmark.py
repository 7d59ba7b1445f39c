"""``framecast benchmark``: every metric per horizon step for checkpoints and baselines, on the same clips.

    framecast benchmark --ckpt_path CKPT [CKPT ...] [--baselines copy_last,linear]
                        [--config FILE | --video PATH] [--data.init_args.KEY VALUE ...] --out DIR
                        [--clips N] [--fit-clips N] [--split test|val|all] [--metrics NAME,...]
                        [--seed_everything S] [--device D] [--lpips auto|off] [--no-progress]
                        [--trainer.strategy ddp --trainer.devices N --trainer.accelerator A --trainer.num_nodes M]

The options every framecast command understands (:mod:`framecast.cli.grammar`) plus this command's own;
``--ckpt_path`` takes several checkpoints, each ``PATH`` or ``NAME=PATH``; one ``NAME`` on several checkpoints makes
them seeds of one candidate, reported as the mean and standard deviation over them with ties marked
(:mod:`framecast.evaluation.seeds`). Old spellings: ``--ckpt``
(``--ckpt_path``), ``--seed`` (``--seed_everything``), ``--batch-size`` (``--data.init_args.batch_size``),
``--data.KEY`` (``--data.init_args.KEY``).

Every candidate (:class:`framecast.evaluation.Candidate`: a checkpoint's model or a baseline) predicts the
same clips of the data's ``--split`` (its own horizon) in the one evaluation loop
(:func:`framecast.evaluation.evaluate`), and every metric of ``--metrics`` (default: every registered one,
:data:`framecast.metrics.METRICS`) is averaged exactly over those clips, per horizon step and over the steps.
The codelength (``bits_per_pixel``) of a deterministic candidate uses a discretized Laplace whose scales are
fitted on the other split (:mod:`framecast.evaluation.laplace`; ``--split all`` scores every clip of every video,
cut by time, each half of a video with the scales fitted on its other half: :func:`framecast.evaluation.inputs.all_clips`);
a checkpoint with a per-pixel distribution
(``head: logistic_mixture``) uses its own. The files written to ``--out`` are described in
:mod:`framecast.evaluation.report`.

Data: ``--config`` takes the ``data:`` section of a ``framecast fit`` config; ``--video`` clips a video file or
folder like the first checkpoint's training clips (fps, clip lengths, size, channels); with neither, the
data the first checkpoint was trained on. ``--data.init_args.KEY VALUE`` overrides an option of it. The
candidates and the data are built by :mod:`framecast.evaluation.inputs`.

Here: the parser (:func:`build_parser`), the processes (:func:`start_processes`, Lightning Fabric), the clips
each process scores (:func:`split_batches`), the whole run (:func:`run`) and the command (:func:`main`).

Several processes: ``--trainer.strategy ddp --trainer.devices N [--trainer.accelerator cpu|gpu]
[--trainer.num_nodes M]``, as for ``framecast fit``, start Lightning Fabric (the config's ``trainer:`` values
fill in those not given; with none of these options on the command line, one process runs on ``--device``).
Each clip is scored on exactly one process (:class:`framecast.data.samplers.EvalSampler`), the sums behind
every metric are added over the processes (:meth:`framecast.metrics.MetricAccumulator.sync_all`) and the
Laplace fit statistics gathered, so the numbers are those of one process; the first process writes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from framecast.cli.grammar import parse, rewrite_aliases, section_dict, tool_parser
from framecast.errors import ConfigError, InputError, bad_input_cause
from framecast.evaluation.inputs import (
    build_datamodule,
    check_compatible,
    has_config,
    load_candidates,
    parse_checkpoints,
    with_data_section,
)
from framecast.evaluation.run import Candidate, evaluate, limit
from framecast.evaluation.seeds import seed_groups

PROG = "framecast benchmark"
ALIASES = {"--ckpt": "--ckpt_path", "--seed": "--seed_everything", "--batch-size": "--data.init_args.batch_size"}
TRAINER_KEYS = {"strategy": "auto", "devices": "auto", "accelerator": "auto", "num_nodes": 1}  # Fabric's defaults
DEFAULT_BASELINES = "copy_last,linear"
DESCRIPTION = """Every metric per horizon step (default: every registered metric; --metrics NAME,... chooses)
for checkpoints (--ckpt_path PATH or NAME=PATH, several allowed; one NAME on several checkpoints: seeds of one
candidate, reported as mean and standard deviation with ties marked) and baselines (--baselines) on the same clips of
the --split; writes results.md, results.csv, results.json and curves.png to --out. Data: --config (the data
section of a fit config), --video (clips cut like the first checkpoint's), else the first checkpoint's own;
--data.init_args.KEY VALUE overrides an option of it. Several processes: --trainer.strategy ddp
--trainer.devices N [--trainer.accelerator cpu|gpu] [--trainer.num_nodes M]. Old spellings: --ckpt, --seed,
--batch-size, --data.KEY."""


# --- the grammar ----------------------------------------------------------------------------------------


def build_parser():
    """The parser of every framecast command (:func:`framecast.cli.grammar.tool_parser`) plus this one's."""
    parser = tool_parser(PROG, DESCRIPTION, several_checkpoints=True)
    parser.add_argument("--baselines", type=str, default=DEFAULT_BASELINES,
                        help=f"comma-separated baselines to add (default {DEFAULT_BASELINES}; 'none' for none)")
    parser.add_argument("--video", type=str | None, default=None,
                        help="a video file, folder or glob, clipped like the first checkpoint's training data")
    parser.add_argument("--out", type=str | None, default=None,
                        help="folder for results.md/.csv/.json and curves.png (required)")
    parser.add_argument("--clips", type=int | None, default=None, help="score at most this many clips (default all)")
    parser.add_argument("--fit-clips", type=int | None, default=None,
                        help="fit the Laplace scales on at most this many clips of the other split (default all)")
    parser.add_argument("--split", default="test", choices=("test", "val", "all"),
                        help="split to score (default test); all: every clip of every video, cut by time (the "
                             "Laplace scales of each half of a video fitted on its other half)")
    parser.add_argument("--metrics", type=str | None, default=None,
                        help="comma-separated registered metrics to report (default: every registered metric)")
    parser.add_argument("--device", type=str | None, default=None,
                        help="cpu, cuda, ... for one process (default: cuda where available)")
    parser.add_argument("--lpips", default="auto", choices=("auto", "off"),
                        help="auto: LPIPS where its weights are on this machine (never downloaded); off: skip it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def baseline_names(text: str) -> list[str]:
    """``--baselines``: comma-separated names (``none`` or empty: no baselines), each a registered baseline."""
    from framecast.models import BASELINES

    if text.strip().lower() in ("", "none"):
        return []
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in BASELINES]
    if unknown:
        raise ConfigError(f"--baselines: unknown baseline {unknown[0]!r}; baselines are {', '.join(sorted(BASELINES))}")
    return names


def metric_names(text: str | None) -> list[str]:
    """``--metrics``: comma-separated registered metrics (None: every registered metric, in table order)."""
    from framecast.metrics import METRICS, metric

    if text is None:
        return list(METRICS)
    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not names:
        raise ConfigError(f"--metrics is empty; registered metrics: {', '.join(METRICS)}")
    for name in names:
        try:
            metric(name)
        except ConfigError as e:
            raise ConfigError(f"--metrics: {e}") from None
    return names


def seed_of(value: Any) -> int:
    if isinstance(value, bool):
        if value:
            raise ConfigError("--seed_everything: the benchmark needs an integer seed (true draws a random one)")
        return 0
    return int(value)


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


# --- processes -------------------------------------------------------------------------------------------


def start_processes(cfg, argv: Sequence[str]) -> tuple[Any, torch.device]:
    """``(fabric or None, this process's device)``: one process on ``--device``, or the processes the
    ``--trainer.*`` options ask for, started by Lightning Fabric (each process runs the command again)."""
    given = [f"--trainer.{k}" for k in TRAINER_KEYS if any(a.partition("=")[0] == f"--trainer.{k}" for a in argv)]
    if not given:
        return None, pick_device(cfg.get("device"))
    if cfg.get("device"):
        raise ConfigError(f"--device cannot be combined with {', '.join(given)}: use --trainer.accelerator "
                          "(cpu or gpu) and --trainer.devices")
    from lightning.fabric import Fabric
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    trainer = section_dict(cfg, "trainer")
    opts = {k: default if trainer.get(k) is None else trainer[k] for k, default in TRAINER_KEYS.items()}
    if isinstance(opts["devices"], str) and opts["devices"].strip().isdigit():
        opts["devices"] = int(opts["devices"])
    try:
        fabric = Fabric(**opts)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:  # Lightning names the bad value
        values = ", ".join(f"{flag} {opts[flag.removeprefix('--trainer.')]}" for flag in given)
        raise ConfigError(f"--trainer.* options ({values}): {e}") from e
    fabric.launch()
    return fabric, fabric.device


def world_and_rank() -> tuple[int, int]:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_world_size(), d.get_rank()
    return 1, 0


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process (``[obj]`` for one process)."""
    world, _ = world_and_rank()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def sync_accumulators(accs: dict, horizon: int, device: torch.device) -> dict:
    """The accumulators with every process's sums added (:meth:`MetricAccumulator.sync_all`).

    A metric unavailable on one process (LPIPS failing there) is unavailable everywhere; every process
    holds the same states in the same order before the sums are added."""
    from framecast.metrics import MetricAccumulator

    world, _ = world_and_rank()
    if world == 1:
        return accs
    meta = gather_objects({name: (acc.names(), dict(acc.unavailable)) for name, acc in accs.items()})
    out = {}
    for name, acc in accs.items():
        order: list[str] = []
        unavailable: dict[str, str] = {}
        for m in meta:
            names_r, unavailable_r = m[name]
            order += [n for n in names_r if n not in order]
            for k, v in unavailable_r.items():
                unavailable.setdefault(k, v)
        for k, v in unavailable.items():
            acc.set_unavailable(k, v)
        synced = MetricAccumulator()
        for n in order:
            if n not in unavailable:
                synced.add(n, torch.zeros(0, horizon, device=device))  # the state, in the common order
        synced.merge(acc)
        synced.sync_all()
        out[name] = synced
    return out


def split_batches(dm, split: str, clips: int | None, flag: str = "--clips"):
    """``(batches, number of batches)`` of at most ``clips`` clips of ``split`` (this process's share of them
    when there are several: each of the first ``clips`` clips on exactly one process). ``flag``: the option
    that gave ``clips`` (``--fit-clips`` for the clips the Laplace scales are fitted on)."""
    from torch.utils.data import DataLoader, Subset

    from framecast.data.samplers import EvalSampler

    world, _ = world_and_rank()
    if clips is not None and clips < world:
        raise InputError(f"{flag} {clips}: fewer clips than the {world} processes; give at least one clip per "
                         f"process, or use fewer --trainer.devices")
    try:
        loader = getattr(dm, f"{split}_dataloader")()
    except ValueError as e:  # e.g. fewer clips than processes (the message names the field)
        if bad_input_cause(e) is not None:
            raise
        raise InputError(str(e)) from e
    if isinstance(loader, list) and not loader:
        instead = ("leave bits_per_pixel out of --metrics" if flag == "--fit-clips" else
                   f"use --split {'val' if split == 'test' else 'test'}")
        what = " to fit the Laplace scales of bits_per_pixel on" if flag == "--fit-clips" else ""
        raise InputError(f"the data has no {split} split{what} (its split fraction is 0): give it clips "
                         f"(data.init_args.split) or {instead}")
    if world > 1:
        if clips is not None and clips < len(loader.dataset):
            sampler = EvalSampler(clips, split=split)
            loader = DataLoader(Subset(loader.dataset, range(clips)), batch_size=loader.batch_size, sampler=sampler,
                                num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                                pin_memory=loader.pin_memory)
        clips = None
    total = len(loader)
    if clips is not None and loader.batch_size:
        total = min(total, math.ceil(clips / loader.batch_size))
    return limit(loader, clips), total


# --- the whole run ------------------------------------------------------------------------------------


def run(candidates: Sequence[Candidate], dm, out: str | Path, clips: int | None = None,
        fit_clips: int | None = None, split: str = "test", metrics: Sequence[str] | None = None, seed: int = 0,
        device: str | torch.device = "cpu", lpips: bool = True, command: str = "",
        progress: bool = True, groups: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Benchmark ``candidates`` on ``dm`` and write the tables and the plot to ``out``: ``(results, paths)``.
    ``groups``: candidates that are seeds of one (:func:`framecast.evaluation.seeds.seed_groups`).

    On several processes (started by :func:`start_processes`) each scores its share of the clips, and only
    the first writes (the others return no paths)."""
    from framecast.evaluation.inputs import all_clips
    from framecast.evaluation.laplace import fit_scales, fit_split, needs_scales
    from framecast.evaluation.report import describe_data, results_dict, write_results
    from framecast.loading import shrink
    from framecast.metrics import LPIPS, METRICS

    if split not in ("val", "test", "all"):
        raise ConfigError(f"--split must be val, test or all, got {split!r}")
    metrics = list(METRICS) if metrics is None else list(metrics)
    device = torch.device(device)
    world, rank = world_and_rank()
    fsplit = fit_split(split)
    need = needs_scales(candidates, metrics)
    shown, fit_part, parts = split, None, [dm]
    if split == "all":  # every clip, each half of a video scored with scales fitted on its other half
        if clips is not None or fit_clips is not None:
            raise ConfigError("--clips and --fit-clips do not apply to --split all, which scores every clip")
        parts, split, fsplit = all_clips(dm), "test", "val"
        fit_part = ("each half (by time) of a video with the scales fitted on its other half (two-fold cross-fit: "
                    "no clip is scored with scales fitted on it)")

    def label(text: str) -> str | None:
        return text if progress and rank == 0 else None

    def score(dm):
        """``(accumulators summed over the processes, clips fitted on, the data as set up)`` of ``dm``'s ``split``."""
        dm = shrink(dm, split, clips)
        if need:
            dm = shrink(dm, fsplit, fit_clips)
        check_compatible(candidates, dm)  # before any decoding; again after setup, which may learn the frame size
        try:
            for s in [split] + ([fsplit] if need else []):
                dm.setup({"val": "validate", "test": "test"}[s])
        except (FileNotFoundError, ValueError) as e:
            if bad_input_cause(e) is not None:
                raise
            raise InputError(f"cannot load the data: {e}") from e
        check_compatible(candidates, dm)
        for c in candidates:
            c.model.to(device)
        n_fit = 0
        if need:
            torch.manual_seed(seed)
            batches, total = split_batches(dm, fsplit, fit_clips, "--fit-clips")
            n_fit = fit_scales(need, batches, device, split=fsplit,
                               progress=label(f"fitting Laplace scales ({fsplit})"), total=total, gather=gather_objects)
        torch.manual_seed(seed)
        batches, total = split_batches(dm, split, clips)
        net = LPIPS(device, enabled=lpips) if any(METRICS[m].needs == "lpips" for m in metrics) else None
        accs = evaluate(candidates, batches, metrics, device=device, progress=label(f"benchmark ({split})"),
                        total=total, lpips=net)
        return sync_accumulators(accs, int(dm.horizon_frames), device), n_fit, dm

    accs, n_fit, dm = score(parts[0])
    for part in parts[1:]:
        more, more_fit, _ = score(part)
        for name, acc in accs.items():
            acc.merge(more[name])
        n_fit += more_fit
    n = max((acc.clips for acc in accs.values()), default=0)
    if n == 0:
        raise InputError(f"the {split} split has no clips: give it some (data.init_args.{split}_size, a longer "
                         f"video) or use another --split")
    data = describe_data(dm, shown, n, fsplit, n_fit)
    if fit_part:
        data["fit_part"] = fit_part
    results = results_dict(candidates, accs, data, metrics, seed, device, command, processes=world, groups=groups)
    return results, write_results(results, out) if rank == 0 else []


def main(argv: list[str] | None = None) -> int:
    from framecast.evaluation.report import print_written

    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([PROG, *argv])
    argv = rewrite_aliases(argv, ALIASES)
    cfg = parse(build_parser(), with_data_section(argv))
    if not cfg.get("out"):
        raise ConfigError("--out is required: the folder for results.md, results.csv, results.json and curves.png")
    metrics = metric_names(cfg.get("metrics"))
    baselines = baseline_names(cfg.baselines)
    checkpoints, groups = seed_groups(parse_checkpoints(cfg.get("ckpt_path") or []))
    if not checkpoints and not baselines:
        raise ConfigError("nothing to benchmark: give --ckpt_path and/or --baselines")
    for flag, value in (("--clips", cfg.get("clips")), ("--fit-clips", cfg.get("fit_clips"))):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if cfg.get("video") and has_config(argv):
        raise ConfigError("give --config or --video, not both")
    seed = seed_of(cfg.seed_everything)
    _, device = start_processes(cfg, argv)
    candidates = load_candidates(checkpoints, baselines, device)
    dm = build_datamodule(cfg, argv, candidates)
    results, paths = run(candidates, dm, cfg.out, clips=cfg.get("clips"), fit_clips=cfg.get("fit_clips"),
                         split=cfg.split, metrics=metrics, seed=seed, device=device, lpips=cfg.lpips == "auto",
                         command=command, progress=not cfg.get("no_progress"), groups=groups)
    if world_and_rank()[1] == 0:
        print_written(results, paths)
    return 0


if __name__ == "__main__":
    from framecast.errors import run_command

    sys.exit(run_command(PROG, main))
