#!/usr/bin/env bash
# "Is recurrence needed?": simvp, tau, convlstm and predrnn on builtin moving digits (10 -> 10 frames of 64x64),
# each trained for the same budget of process CPU seconds (framecast.budget.CpuBudget), one thread, 3 seeds,
# from its configs/moving_mnist_<model>_cpu.yaml as shipped except: no validation during fit, and no teacher
# forcing for predrnn (its scheduled sampling decays over 2000 steps, far more than the budget allows).
#   benchmarks/recurrence_cpu.sh                      # fit the 12 runs (JOBS=2: two at a time)
#   benchmarks/recurrence_cpu.sh report               # one framecast benchmark of the 12 checkpoints
#   benchmarks/recurrence_cpu.sh speed                # framecast speed of each model (training, one thread)
# Environment: BUDGET (CPU seconds per run, 90), SEEDS ("0 1 2"), MODELS ("simvp tau convlstm predrnn"),
# OUT (runs/recurrence_cpu), JOBS (1), TEST_SIZE (test and validation clips, 256); RUNS ("model:seed ...", default
# every model and seed) fits only those.
set -euo pipefail
BUDGET=${BUDGET:-90}
SEEDS=${SEEDS:-0 1 2}
MODELS=${MODELS:-simvp tau convlstm predrnn}
OUT=${OUT:-runs/recurrence_cpu}
JOBS=${JOBS:-1}
TEST_SIZE=${TEST_SIZE:-256}
FRAMECAST=${FRAMECAST:-framecast}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

fit_one() {  # model seed
  local m=$1 s=$2 extra=()
  [ "$m" = predrnn ] && extra=(--model.teacher_forcing none --model.teacher_forcing_options "{}")
  "$FRAMECAST" fit --config "configs/moving_mnist_${m}_cpu.yaml" --seed_everything "$s" \
    --trainer.max_steps -1 --trainer.limit_val_batches 0 --trainer.enable_progress_bar false \
    --trainer.callbacks "[{class_path: framecast.budget.CpuBudget, init_args: {seconds: $BUDGET}}]" \
    --trainer.default_root_dir "$OUT/$m/seed$s" --trainer.logger false "${extra[@]}" > "$OUT/$m/seed$s.log" 2>&1
  grep "CPU budget" "$OUT/$m/seed$s.log"
}

if [ "${1:-fit}" = fit ]; then
  RUNS=${RUNS:-$(for m in $MODELS; do for s in $SEEDS; do echo "$m:$s"; done; done)}
  for r in $RUNS; do mkdir -p "$OUT/${r%%:*}"; echo "${r%%:*} ${r##*:}"; done |
    while read -r m s; do
      if [ "$JOBS" -gt 1 ]; then
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
        (echo "$m seed $s: $(fit_one "$m" "$s")") &
      else
        echo "$m seed $s: $(fit_one "$m" "$s")"
      fi
    done
  wait
elif [ "$1" = speed ]; then  # the training clips per second of each, as fit trains it (one thread)
  for m in $MODELS; do
    extra=()
    [ "$m" = predrnn ] && extra=(--model.teacher_forcing none --model.teacher_forcing_options "{}")
    "$FRAMECAST" speed --config "configs/moving_mnist_${m}_cpu.yaml" "${extra[@]}" --threads 1 --steps 3 --warmup 1 \
      --no-reference --no-inference --no-progress --json "$OUT/speed_$m.json" > "$OUT/speed_$m.txt" 2>&1
    echo "$m: $(grep "train step" "$OUT/speed_$m.txt" | head -1 | tr -s ' ')"
  done
else  # one table: a NAME on its 3 seeds' checkpoints is reported as their mean and standard deviation
  ckpts=()
  for m in $MODELS; do for s in $SEEDS; do ckpts+=("$m=$OUT/$m/seed$s/checkpoints/last.ckpt"); done; done
  "$FRAMECAST" benchmark --ckpt_path "${ckpts[@]}" --data.init_args.test_size "$TEST_SIZE" \
    --data.init_args.val_size "$TEST_SIZE" --out "$OUT/benchmark" --no-progress
fi
