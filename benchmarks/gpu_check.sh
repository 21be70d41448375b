#!/usr/bin/env bash
# The GPU checks of the distributed/AMP work, as one script for a lent single-GPU machine.
#
#   OUT=runs/gpu_check bash benchmarks/gpu_check.sh        # from the repository root
#
# Needs a Python with a CUDA build of torch and this package importable (`pip install -e .`, or
# PYTHONPATH=src with tensorly and pytorch-optimizer installed). Each step has its own time limit;
# every log lands in $OUT. With one GPU, DDP and FSDP2 run 2 ranks over gloo (NCCL needs a GPU per
# rank) and 1 rank over NCCL: that still runs the NCCL all-reduce of the sharded norms, and the
# CPU-offload round trip (host shards, reduction on the GPU) that cannot run on a CPU-only machine.
set -u
out=${OUT:-runs/gpu_check}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "rc $?" >>"$out/$name.log"
    tail -n 12 "$out/$name.log"
}

nvidia-smi -L >"$out/card.txt" 2>&1
"$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >>"$out/card.txt" 2>&1
cat "$out/card.txt"

step step_overhead 200 "$py" benchmarks/step_overhead.py --device cuda --sync-check --sweep 2,8,32,128 \
    --json "$out/step_overhead.json"
step ddp_step 120 "$py" -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_step.py \
    --device cuda --rounds 10
for args in "--optimizer das" "--optimizer sam" "--optimizer sgd" "--mixed-precision" "--offload"; do
    name="fsdp2_1rank_nccl_${args// /}"
    step "${name//-/}" 60 "$py" -m torch.distributed.run --standalone --nproc_per_node 1 examples/fsdp2_train.py $args
done
step tests 200 "$py" -m pytest -q -x tests/test_fsdp.py tests/test_distributed.py tests/test_amp.py tests/test_das.py \
    tests/test_sam.py
