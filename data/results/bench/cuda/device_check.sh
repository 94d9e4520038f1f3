#!/bin/bash
# Device check for issue 8: the speed/memory benchmarks on CUDA. Usage: bash .devcheck/run.sh OUTDIR [cpu-smoke]
O=${1:-$OUT}; SMOKE=$2
export PYTHONPATH=$PWD:$PWD/.devcheck/site PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error PYTHONWARNINGS=ignore
PY=${PY:-python3}
R="$PY -m rmt_lab"
if [ -n "$SMOKE" ]; then
  DEV="--device cpu"; BB=tiny-bert; SEG=4; MM=512; L1="2000 8000"; L2="2000 8000"; DEMO=20000; DT=float32
else
  DEV="--device cuda"; BB=minilm-random; SEG=64; MM=8192; L1="16000 2048000 10000000"; L2="16000 64000 128000"; DEMO=2048000; DT=bfloat16
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
fi
$PY -c "import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
t0=$(date +%s)
echo "== 1 speed fp32"; timeout 100 $R bench speed --backbone $BB $DEV --batches 1 --segments $SEG --matmul-n $MM \
  --methods rmt backbone rmt-naive rmt-train rmt-train-ckpt --out $O/fp32 --no-progress 2>&1 | grep -v "^ *warn"
echo "== t $(( $(date +%s) - t0 )) s"
echo "== 2 speed $DT"; timeout 180 $R bench speed --backbone $BB $DEV --dtype $DT --batches 1 8 --segments $SEG --matmul-n $MM \
  --compile reduce-overhead --out $O/bf16 --no-progress 2>&1 | grep -v "^ *warn"
echo "== t $(( $(date +%s) - t0 )) s"
echo "== 3 memory $DT"; timeout 120 $R bench memory --backbone $BB $DEV --dtype $DT --methods rmt --modes forward \
  --lengths $L1 --out $O/mem --no-progress 2>&1 | tail -12
timeout 60 $R bench memory --backbone $BB $DEV --dtype $DT --methods full-sdpa --modes forward \
  --lengths $L2 --out $O/mem --no-progress 2>&1 | tail -12
echo "== t $(( $(date +%s) - t0 )) s"
echo "== 4 demo"; timeout 45 $R demo --tokens $DEMO --backbone $BB $DEV --dtype $DT --compile reduce-overhead 2>&1 | tail -2
echo "== done in $(( $(date +%s) - t0 )) s"
