#!/usr/bin/env bash
# GPU speed of the literature's Moving MNIST ConvLSTM (4 x 128 channels, kernel 5, patch 4, 10 -> 10 frames of
# 64x64): training step at batch 16 and forward throughput (sequences/s) at batch 100, in float32 and
# bf16-mixed, eager and torch.compile'd, each next to the float32 eager reference ConvLSTM timed in the same run.
#
#   benchmarks/gpu_speed.sh OUT_DIR [extra framecast speed options, e.g. --steps 20 --model.hidden [64,64]]
#
# Writes one JSON per configuration into OUT_DIR (see docs/performance.md for the fields) and a summary,
# OUT_DIR/summary.md. A configuration that fails (e.g. CUDA graphs under an old driver) is logged in
# OUT_DIR/<name>.log and the others go on. Options are framecast's one command grammar (framecast speed
# --help): --trainer.precision, --data.init_args.KEY, --model.KEY, ...; a later one overrides an earlier one.
# Run from the repository root with the venv active or FRAMECAST=".venv/bin/framecast" set.
set -u
OUT="${1:?usage: benchmarks/gpu_speed.sh OUT_DIR [framecast speed options]}"
shift
mkdir -p "$OUT"
FRAMECAST="${FRAMECAST:-framecast}"
CONFIG="${CONFIG:-configs/moving_mnist_convlstm.yaml}"
COMMON=(--config "$CONFIG" --device cuda --data.init_args.batch_size 16 --inference-batch-size 100
        --steps 20 --warmup 5 --conv-reps 5 --no-progress "$@")

run() {  # run NAME OPTIONS...
  local name="$1"; shift
  echo "== $name: $FRAMECAST speed ${COMMON[*]} $*" >&2
  if "$FRAMECAST" speed "${COMMON[@]}" "$@" --json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.log"; then
    tail -n 12 "$OUT/$name.log" >&2
  else
    echo "   FAILED (see $OUT/$name.log)" >&2
    tail -n 5 "$OUT/$name.log" >&2
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true

# Eager: float32 with bf16 in the same rounds (and the reference), then channels-last.
run eager_fp32_bf16          --trainer.precision 32 --extra-precision bf16-mixed
run eager_bf16_channels_last --trainer.precision bf16-mixed --channels-last --no-reference
# torch.compile of the recurrent step (default mode), then with CUDA graphs (reduce-overhead).
run compile_fp32_bf16        --trainer.precision 32 --extra-precision bf16-mixed --compile --no-reference
run compile_bf16_channels_last --trainer.precision bf16-mixed --compile --channels-last --no-reference
run cudagraphs_bf16          --trainer.precision bf16-mixed --compile-mode reduce-overhead --no-reference
run cudagraphs_bf16_channels_last --trainer.precision bf16-mixed --compile-mode reduce-overhead --channels-last --no-reference

# A Markdown summary of every JSON written.
"${PYTHON:-python3}" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| run | precision | train step, batch 16 (median) | train clips/s | inference sequences/s, batch 100 "
        "| train GFLOP/s | of conv peak | speed-up vs reference (train / inference) | peak memory (train) |",
        "|---|---|---|---|---|---|---|---|---|"]
for f in sorted(out.glob("*.json")):
    d = json.loads(f.read_text())
    variants = [(d["settings"]["precision"], d)] + list(d.get("extra", {}).items())
    for prec, r in variants:
        t, i = r["train"], r.get("inference", {})
        su = (f"{r['train_speedup']:.2f}x / {r.get('inference_speedup', float('nan')):.2f}x"
              if "train_speedup" in r else "-")
        rows.append(f"| {f.stem} | {prec} | {1e3 * t['step_time_s']['median']:.1f} ms | {t['clips_per_s']:.1f} "
                    f"| {i.get('clips_per_s', float('nan')):.1f} | {t['flops_per_s'] / 1e9:,.0f} "
                    f"| {100 * t['fraction_of_conv_peak']:.0f} % | {su} | {t['peak_memory_bytes'] / 2**20:,.0f} MiB |")
    if d.get("reference"):
        r = d["reference"]
        rows.append(f"| {f.stem} | reference 32 | {1e3 * r['train']['step_time_s']['median']:.1f} ms "
                    f"| {r['train']['clips_per_s']:.1f} | {r.get('inference', {}).get('clips_per_s', float('nan')):.1f} "
                    f"| {r['train']['flops_per_s'] / 1e9:,.0f} | - | 1.00x | {r['train']['peak_memory_bytes'] / 2**20:,.0f} MiB |")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
print(f"wrote {out / 'summary.md'}", file=sys.stderr)
EOF
