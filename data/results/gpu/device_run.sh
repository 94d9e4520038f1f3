#!/bin/bash
# One device call: setup, smoke test, then reasoning trainings and long evaluations in parallel until a deadline.
# LOCAL=1 runs the same plan on CPU with tiny settings, to check it before spending device time.
set -u
T0=$(date +%s); D=${DEADLINE:-480}
W=/tmp/w; rm -rf $W; mkdir -p $W/logs; OUT=${OUT:-/tmp/out}; mkdir -p $OUT
export PYTHONPATH=$PWD/gpu:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=${PY:-python3}
left() { local l=$(( D - ($(date +%s) - T0) )); echo $(( l > 1 ? l : 1 )); }
$PY gpu/setup.py || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch,transformers,accelerate,sys;print(sys.version.split()[0],torch.__version__,transformers.__version__,accelerate.__version__,torch.cuda.is_available())"
if [ "${LOCAL:-0}" = 1 ]; then
  TR="curriculum.stages=[1,2] curriculum.max_steps=2 curriculum.min_steps=1 run.eval_every=1 run.eval_samples=8 optim.batch_size=4"
  TR2="curriculum.max_steps=3"; MAXT=4000; MINT=1000; N=4; GEN="--max-segments 3 --samples 8"; ABL="--max-segments 2 --samples 8"
else
  TR=""; TR2="curriculum.max_steps=800"; MAXT=2048000; MINT=16000; N=64; GEN="--max-segments 15 --samples 128"; ABL="--max-segments 7 --samples 128"
fi
M=rmt_lab
# smoke: two tiny stages on the device, so a broken path costs seconds, not the whole call
$PY -m $M train --config base --task reasoning --run-dir $W/smoke --set run.mixed_precision=bf16 \
  curriculum.stages=[1,2] curriculum.max_steps=2 curriculum.min_steps=1 run.eval_every=1 run.eval_samples=8 \
  > $W/logs/smoke.log 2>&1 || { tail -30 $W/logs/smoke.log; exit 1; }
echo "smoke ok at $(( $(date +%s) - T0 )) s"; rm -rf $W/smoke
evals() {  # the full evaluation set of a finished run, on whatever time is left
  local run=$1
  timeout $(left) $PY -m $M eval generalization --run-dir $W/$run $GEN --dtype bfloat16 && \
  timeout $(left) $PY -m $M eval ablation --run-dir $W/$run $ABL --dtype bfloat16 && \
  timeout $(left) $PY -m $M eval long --run-dir $W/$run --min-tokens $MINT --max-tokens $MAXT --samples $N --batch-size $N --dtype bfloat16
}
variant() {  # name, overrides...
  local run=$1; shift
  timeout $(left) $PY -m $M train --config base --task reasoning --run-dir $W/$run --set run.mixed_precision=bf16 $TR "$@" \
    && echo "$run trained at $(( $(date +%s) - T0 )) s" && evals $run && echo "$run evaluated at $(( $(date +%s) - T0 )) s"
}
variant reasoning-v1 > $W/logs/reasoning-v1.log 2>&1 & P="$!"
variant reasoning-v2 $TR2 > $W/logs/reasoning-v2.log 2>&1 & P="$P $!"
variant reasoning-v3 $TR2 rmt.lora_rank=64 rmt.lora_alpha=128 > $W/logs/reasoning-v3.log 2>&1 & P="$P $!"
MEM=data/results/runs/base-memorize
( timeout $(left) $PY -m $M eval long --run-dir $MEM --min-tokens $MINT --max-tokens $MAXT --samples $N --batch-size $N \
    --dtype bfloat16 --out $W/memorize/long_eval.parquet && echo "memorize to $MAXT at $(( $(date +%s) - T0 )) s" ) > $W/logs/memorize.log 2>&1 & P="$P $!"
( timeout $(left) $PY -m $M eval long --run-dir $MEM --min-tokens $(( MAXT * 5 )) --max-tokens $(( MAXT * 5 )) --samples $N --batch-size $N \
    --dtype bfloat16 --out $W/memorize_10m/long_eval.parquet && echo "memorize 5x at $(( $(date +%s) - T0 )) s" ) > $W/logs/memorize_10m.log 2>&1 & P="$P $!"
( timeout $(left) $PY -m $M eval long --run-dir $MEM --min-tokens $MINT --max-tokens $(( MINT * 2 )) --samples $N --batch-size $N \
    --dtype float32 --out $W/memorize_fp32/long_eval.parquet && echo "memorize fp32 at $(( $(date +%s) - T0 )) s" ) > $W/logs/memorize_fp32.log 2>&1 & P="$P $!"
( while [ $(left) -gt 0 ]; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; sleep 30; done ) > $W/logs/gpu_util.log 2>&1 & U=$!
wait $P; kill $U 2>/dev/null
echo "all done at $(( $(date +%s) - T0 )) s"
for f in $W/logs/*.log; do echo "== $f"; tail -c 600 $f | tr '\r' '\n' | tail -4; done
$PY gpu/pack.py
ls -la $OUT
