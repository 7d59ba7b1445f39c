#!/usr/bin/env bash
# GPU speed of every registered predictor at its literature setting (configs/moving_mnist_<name>.yaml: e.g. the
# ConvLSTM's 4 x 128 channels, kernel 5, patch 4, 10 -> 10 frames of 64x64): the training step at batch 16 and
# the forward throughput (sequences/s) at batch 100, in bf16-mixed (and float32 in the same rounds), eager,
# torch.compile'd, and compiled with CUDA graphs (--compile-mode reduce-overhead). The ConvLSTM also runs next
# to the float32 eager reference ConvLSTM timed in the same rounds, and in channels-last.
#
#   benchmarks/gpu_speed.sh [--dry-run] OUT_DIR [extra framecast speed options, e.g. --steps 20]
#
# Writes one JSON per model and configuration into OUT_DIR (<model>__<run>.json; fields in docs/performance.md)
# and a summary, OUT_DIR/summary.md. A configuration that fails (e.g. CUDA graphs under an old driver) is
# logged in OUT_DIR/<model>__<run>.log and the others go on. --dry-run prints each framecast speed command
# line instead of running it. MODELS="convlstm mim" limits the models (default: every registered predictor
# with a configs/moving_mnist_<name>.yaml). Options are framecast's one command grammar (framecast speed
# --help); a later one overrides an earlier one. Run from the repository root with the venv active or
# FRAMECAST=.venv/bin/framecast PYTHON=.venv/bin/python set.
set -u
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT="${1:?usage: benchmarks/gpu_speed.sh [--dry-run] OUT_DIR [framecast speed options]}"
shift
FRAMECAST="${FRAMECAST:-framecast}"
PYTHON="${PYTHON:-python3}"
COMMON=(--device cuda --data.init_args.batch_size 16 --inference-batch-size 100 --steps 20 --warmup 5
        --conv-reps 5 --no-progress)
MODELS="${MODELS:-$("$PYTHON" -c 'from framecast.models import list_models; print(*list_models("predictor"))')}" \
  || { echo "cannot list the predictors with $PYTHON (set PYTHON=.venv/bin/python)" >&2; exit 1; }
[ "$DRY" = 1 ] || mkdir -p "$OUT"

run() {  # run MODEL NAME OPTIONS...
  local model="$1" name="$2"; shift 2
  local args=(speed --config "configs/moving_mnist_$model.yaml" "${COMMON[@]}" "$@" "${EXTRA[@]}"
              --json "$OUT/${model}__$name.json")
  if [ "$DRY" = 1 ]; then echo "$FRAMECAST ${args[*]}"; return; fi
  echo "== $model $name: $FRAMECAST ${args[*]}" >&2
  if "$FRAMECAST" "${args[@]}" >/dev/null 2>"$OUT/${model}__$name.log"; then
    tail -n 12 "$OUT/${model}__$name.log" >&2
  else
    echo "   FAILED (see $OUT/${model}__$name.log)" >&2
    tail -n 5 "$OUT/${model}__$name.log" >&2
  fi
}
EXTRA=("$@")

[ "$DRY" = 1 ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true

for model in $MODELS; do
  if [ ! -f "configs/moving_mnist_$model.yaml" ]; then
    echo "-- $model: no configs/moving_mnist_$model.yaml, skipped" >&2
    continue
  fi
  # eager: bf16 with float32 in the same rounds (the ConvLSTM also with its float32 reference)
  run "$model" eager_bf16_fp32 --trainer.precision bf16-mixed --extra-precision 32
  # torch.compile of the recurrent step (default mode), then with CUDA graphs (reduce-overhead)
  run "$model" compile_bf16 --trainer.precision bf16-mixed --compile --no-reference
  run "$model" cudagraphs_bf16 --trainer.precision bf16-mixed --compile-mode reduce-overhead --no-reference
  if [ "$model" = convlstm ]; then  # channels-last, eager and compiled
    run "$model" eager_bf16_channels_last --trainer.precision bf16-mixed --channels-last --no-reference
    run "$model" compile_bf16_channels_last --trainer.precision bf16-mixed --compile --channels-last --no-reference
  fi
done
[ "$DRY" = 1 ] && exit 0

# A Markdown summary of every JSON written.
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
nan = float("nan")
rows = ["| model | run | precision | train step, batch 16 (median) | train clips/s | forward sequences/s, batch 100 "
        "| train GFLOP/s | of conv peak (train / forward) | vs reference (train / forward) | peak memory (train) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
for f in sorted(out.glob("*__*.json")):
    d = json.loads(f.read_text())
    model, run = f.stem.split("__", 1)
    variants = [(d["settings"]["precision"], d)] + list(d.get("extra", {}).items())
    for prec, r in variants:
        t, i = r["train"], r.get("inference", {})
        su = (f"{r['train_speedup']:.2f}x / {r.get('inference_speedup', nan):.2f}x" if "train_speedup" in r else "-")
        rows.append(f"| {model} | {run} | {prec} | {1e3 * t['step_time_s']['median']:.1f} ms | {t['clips_per_s']:.1f} "
                    f"| {i.get('clips_per_s', nan):,.0f} | {t['flops_per_s'] / 1e9:,.0f} "
                    f"| {100 * t['fraction_of_conv_peak']:.0f} % / {100 * (i.get('fraction_of_conv_peak') or nan):.0f} % "
                    f"| {su} | {t['peak_memory_bytes'] / 2**20:,.0f} MiB |")
    if d.get("reference"):
        r = d["reference"]
        rows.append(f"| {model} | {run} | reference 32 | {1e3 * r['train']['step_time_s']['median']:.1f} ms "
                    f"| {r['train']['clips_per_s']:.1f} | {r.get('inference', {}).get('clips_per_s', nan):,.0f} "
                    f"| {r['train']['flops_per_s'] / 1e9:,.0f} | - | 1.00x | {r['train']['peak_memory_bytes'] / 2**20:,.0f} MiB |")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
print(f"wrote {out / 'summary.md'}", file=sys.stderr)
EOF
