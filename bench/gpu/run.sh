#!/usr/bin/env bash
# The one command the GPU machine runs (after bench/gpu/pack.sh here; carry .gpu): unpacks Deno,
# the bundles and the Vulkan loader, prints the WebGPU adapter, then side by side in one call:
#   - deno task bench --backend webgpu: the course U-Net at 32x32 batch 32, the same family at the
#     seed-002 size (width 128, multipliers 1,1,2,2) at 64x64 batch 16, and seed 002's own network
#     (full attention at 16x16, groups 32, dropout) at 64x64 batch 16;
#   - PyTorch on CUDA on the first two shapes (the baseline has only this U-Net family);
#   - the wasm backend and PyTorch's CPU path pinned to 2 cores (the machine CI and users have);
#   - the quickstart trained end to end on webgpu, twice, to see whether the bits repeat.
# Everything goes to $OUT (log.txt, results.tar of JSON, samples*.png).
#
#   bash bench/gpu/run.sh           # on the device
#   SHORT=1 bash bench/gpu/run.sh   # a second try in what is left of the device time: the course
#                                   # U-Net side by side, a 100-step quickstart, a repeat pair
#   TINY=1 bash bench/gpu/run.sh    # here, against Mesa's llvmpipe: tiny sizes, same steps
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
OUT=${OUT:-/tmp/ddpm-gpu-out}
mkdir -p "$OUT"
work=/tmp/ddpm-gpu
rm -rf "$work"
mkdir -p "$work/results"
exec > >(tee "$OUT/log.txt") 2>&1
stamp() { # also packs the results so far: a run stopped at its time limit keeps them
  [ -d "$work/results" ] && tar -C "$work" -cf "$OUT/results.tar" results
  echo "== $(date +%T) $*"
}

stamp unpack
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$nvidia_icd" ] && export VK_DRIVER_FILES=$nvidia_icd
xz -dc .gpu/deno.xz >"$work/deno" && chmod +x "$work/deno"
tar -C "$work" -xJf .gpu/app.tar.xz
export DENO_DIR=$work/deno_dir XDG_RUNTIME_DIR=/tmp NO_COLOR=1
D="$work/deno"
app=$work/app
"$D" --version | head -n 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
nproc

stamp adapter
ls /usr/local/nvidia/share/vulkan/icd.d /etc/vulkan/icd.d /usr/share/vulkan/icd.d 2>/dev/null
"$D" run -A --no-config "$app/adapter.js" | tee "$work/results/adapter.json"

if [ -n "${TINY:-}" ]; then
  small=8 small_batch=2 big=8 big_batch=2 reps=(--reps 2 --warmup 1)
  torch_iters=(--train-iters 2 --sample-iters 2 --warmup 1)
  wide='{"width":8,"multipliers":[1,1,2,2]}'
  anime='{"width":8,"multipliers":[1,1,2,2],"groups":8,"attention":{"kind":"full","levels":[1]},"dropout":0.1}'
  quick=(--set dataset.count=64 --set train.maxSteps=4 --set schedule.timesteps=10 --set sampler.count=8
    --set sampler.batchSize=8)
  device=cpu
  : "${QUICK_TIMEOUT:=900}" # llvmpipe on 2 cores: minutes per tiny run
elif [ -n "${SHORT:-}" ]; then
  small=32 small_batch=32 reps=(--reps 5 --warmup 2)
  torch_iters=(--train-iters 12 --sample-iters 20 --warmup 3)
  quick=(--set "train.maxSteps=${QUICK_STEPS:-100}")
  device=cuda
else
  small=32 small_batch=32 big=64 big_batch=16 reps=(--reps 10 --warmup 3)
  torch_iters=(--train-iters 12 --sample-iters 20 --warmup 3)
  wide='{"width":128,"multipliers":[1,1,2,2]}'
  anime='{"width":128,"multipliers":[1,1,2,2],"groups":32,"attention":{"kind":"full","levels":[2]},"dropout":0.1}'
  quick=(--set "train.maxSteps=${QUICK_STEPS:-300}")
  device=cuda
fi
wide_dim=$(echo "${wide:-}" | sed -E 's/.*"width":([0-9]+).*/\1/')

pin=(env) # a command prefix: `taskset -c 0,1` pins to 2 cores
bench() { # name args...
  local name=$1
  shift
  stamp "bench $name"
  timeout "${BENCH_TIMEOUT:-120}" "${pin[@]}" "$D" run -A --no-config "$app/bench.js" --only train,sample \
    --json "$work/results/$name.json" "$@"
}
torch() { # name args...
  local name=$1
  shift
  if ! python3 -c 'import torch' 2>/dev/null; then
    echo "== torch $name: skipped (no PyTorch here)"
    return
  fi
  stamp "torch $name"
  (cd "$app" && timeout 120 "${pin[@]}" python3 torch_shapes.py --json "$work/results/$name.json" "$@" |
    grep -E '"(gpu|torch|device|params|median)"')
}

quickstart() { # i
  local i=$1
  shift
  stamp "quickstart on webgpu, run $i"
  timeout "${QUICK_TIMEOUT:-300}" "$D" run -A --no-config "$app/ddpm.js" run \
    experiments/quickstart.json --set backend=webgpu --set train.microBatch=32 "$@" \
    --out "$work/outputs-$i" | tail -n 25
  run_dir=$(ls -d "$work/outputs-$i"/quickstart/seed-* 2>/dev/null | head -n 1)
  if [ -n "$run_dir" ]; then
    cp "$run_dir/samples.png" "$OUT/samples-$i.png"
    cp "$run_dir/manifest.json" "$work/results/quickstart-$i-manifest.json"
    cp "$run_dir/metrics.jsonl" "$work/results/quickstart-$i-metrics.jsonl"
    sha256sum "$run_dir/samples.png" "$run_dir/metrics.jsonl" "$run_dir/checkpoint/model.safetensors"
  fi
}

stamp "kernel launch cost"
"$D" run -A --no-config "$app/dispatch.js" 700
bench webgpu-course --size $small --batch $small_batch "${reps[@]}" --backend webgpu --micro-batch 0
torch torch-$device-course --size $small --batch $small_batch --device $device --threads 16 \
  "${torch_iters[@]}"
quickstart 1 "${quick[@]}"
if [ -n "${SHORT:-}" ]; then
  # Two identical short runs: do the bits repeat on this GPU?
  repeat=(--set train.maxSteps=8 --set sampler.count=8 --set sampler.batchSize=8)
  quickstart 2 "${repeat[@]}"
  quickstart 3 "${repeat[@]}"
  stamp "compare the two repeated runs"
  cmp "$work/results/quickstart-2-metrics.jsonl" "$work/results/quickstart-3-metrics.jsonl" &&
    echo "metrics.jsonl: identical bits"
  cmp "$OUT/samples-2.png" "$OUT/samples-3.png" && echo "samples.png: identical bits"
  stamp done
  exit 0
fi
bench webgpu-wide --size $big --batch $big_batch "${reps[@]}" --backend webgpu --micro-batch 0 \
  --model "$wide"
torch torch-$device-wide --dim "$wide_dim" --mults 1,1,2,2 --size $big --batch $big_batch \
  --device $device --threads 16 "${torch_iters[@]}"
bench webgpu-anime --size $big --batch $big_batch "${reps[@]}" --backend webgpu --micro-batch 0 \
  --model "$anime"
# The machine users and CI have: 2 cores.
command -v taskset >/dev/null && pin=(taskset -c 0,1)
bench wasm-2cores-course --size $small --batch $small_batch --reps 4 --warmup 1 --backend wasm \
  --workers 1 --micro-batch 8
torch torch-cpu-2cores-course --size $small --batch $small_batch --device cpu --threads 2 \
  "${torch_iters[@]}"
pin=(env)
quickstart 2 "${quick[@]}"

stamp "compare the two quickstart runs"
cmp "$work/results/quickstart-1-metrics.jsonl" "$work/results/quickstart-2-metrics.jsonl" &&
  echo "metrics.jsonl: identical bits"
cmp "$OUT/samples-1.png" "$OUT/samples-2.png" && echo "samples.png: identical bits"
tar -C "$work" -cf "$OUT/results.tar" results
stamp done
