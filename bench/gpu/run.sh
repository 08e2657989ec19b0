#!/usr/bin/env bash
# The one command the GPU machine runs (after bench/gpu/pack.sh here; carry .gpu): unpacks Deno,
# the bundles and the Vulkan loader, prints the WebGPU adapter, then in one call:
#   1. bench/gpu/dispatch.ts: what one WebGPU dispatch costs from Deno (741: a course step's);
#   2. the compiled WebGPU engine (deno task bench --backend webgpu: dispatches, host encode ms,
#      device memory, creation, wall ms per train step and per sampling forward) beside PyTorch
#      CUDA on the same shapes: the course U-Net at 32x32 batch 32, the 22M network of seed 002's
#      size (width 128, multipliers 1,1,2,2) at 64x64 batch 16 and batch 64, and seed 002's own
#      network (full attention at 16x16, groups 32, dropout) at 64x64 batch 16 (engine only: the
#      baseline has one U-Net family);
#   3. the quickstart trained end to end with --set backend=webgpu, twice: the same bytes?
# Then a summary table (ratios to PyTorch). Everything goes to $OUT (log.txt, results.tar of the
# JSON, samples-*.png).
#
#   bash bench/gpu/run.sh           # on the device (about 6-8 minutes)
#   SHORT=1 bash bench/gpu/run.sh   # a second try in what is left of the device time: the course
#                                   # U-Net side by side and an 8-step quickstart pair
#   TINY=1 bash bench/gpu/run.sh    # here, against Mesa's llvmpipe: tiny shapes, every step of the
#                                   # script (the engine's wall path forced with --wall), ~1 min
#
# Without .gpu/app.tar.xz (or with LOCAL=1) it runs straight from the checkout with the `deno`
# on PATH (and ../shared/reference/torch_unet_baseline.py for PyTorch, when torch is installed).
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
export XDG_RUNTIME_DIR=/tmp NO_COLOR=1

if [ -z "${LOCAL:-}" ] && [ -f .gpu/app.tar.xz ]; then
  stamp "unpack .gpu"
  if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
    for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  xz -dc .gpu/deno.xz >"$work/deno" && chmod +x "$work/deno"
  tar -C "$work" -xJf .gpu/app.tar.xz
  export DENO_DIR=$work/deno_dir
  app=$work/app
  D=("$work/deno" run -A --no-config)
  bench_js=$app/bench.js cli_js=$app/ddpm.js dispatch_js=$app/dispatch.js adapter_js=$app/adapter.js
  torch_dir=$app
else
  stamp "from the checkout (no .gpu bundle, or LOCAL=1)"
  D=(deno run -A)
  bench_js=bench/mod.ts cli_js=mod.ts dispatch_js=bench/gpu/dispatch.ts adapter_js=bench/gpu/adapter.ts
  torch_dir=${TORCH_DIR:-$(cd .. && pwd)/shared/reference}
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$nvidia_icd" ] && export VK_DRIVER_FILES=$nvidia_icd
"${D[0]}" --version | head -n 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
echo "$(nproc) cores"

stamp adapter
ls /usr/local/nvidia/share/vulkan/icd.d /etc/vulkan/icd.d /usr/share/vulkan/icd.d 2>/dev/null
"${D[@]}" "$adapter_js" | tee "$work/results/adapter.json"

if [ -n "${TINY:-}" ]; then
  small=8 small_batch=2 big=8 big_batch=2 huge_batch=4
  reps=(--reps 2 --warmup 0 --engine-steps 2 --wall) # llvmpipe: submit the (tiny) steps anyway
  reps64=("${reps[@]}")
  torch_iters=(--train-iters 2 --sample-iters 2 --warmup 1)
  wide='{"width":8,"multipliers":[1,1,2,2]}'
  anime='{"width":8,"multipliers":[1,1,2,2],"groups":8,"attention":{"kind":"full","levels":[1]},"dropout":0.1}'
  quick=(--set dataset.count=64 --set transform.size=8 --set model.width=8
    --set 'model.multipliers=[1,2]' --set train.batchSize=8 --set train.maxSteps=4
    --set schedule.timesteps=10 --set sampler.count=8 --set sampler.batchSize=8)
  repeat=("${quick[@]}")
  device=cpu dispatches=741
  : "${QUICK_TIMEOUT:=300}" "${BENCH_TIMEOUT:=300}"
elif [ -n "${SHORT:-}" ]; then
  small=32 small_batch=32 reps=(--reps 5 --warmup 2 --engine-steps 10)
  torch_iters=(--train-iters 12 --sample-iters 20 --warmup 3)
  quick=(--set train.maxSteps=8 --set sampler.count=8 --set sampler.batchSize=8)
  repeat=("${quick[@]}")
  device=cuda dispatches=741
else
  small=32 small_batch=32 big=64 big_batch=16 huge_batch=64
  reps=(--reps 10 --warmup 3 --engine-steps 10)
  reps64=(--reps 5 --warmup 1 --engine-steps 5) # 30 steps: within the time limit even if slow
  torch_iters=(--train-iters 12 --sample-iters 20 --warmup 3)
  wide='{"width":128,"multipliers":[1,1,2,2]}'
  anime='{"width":128,"multipliers":[1,1,2,2],"groups":32,"attention":{"kind":"full","levels":[2]},"dropout":0.1}'
  quick=(--set "train.maxSteps=${QUICK_STEPS:-200}")
  repeat=("${quick[@]}")
  device=cuda dispatches=741
fi
: "${QUICK_TIMEOUT:=180}" "${BENCH_TIMEOUT:=120}"
wide_dim=$(echo "${wide:-}" | sed -E 's/.*"width":([0-9]+).*/\1/')

bench() { # name args...: the engine (train and sample phases) on this adapter
  local name=$1
  shift
  stamp "engine $name"
  timeout "$BENCH_TIMEOUT" "${D[@]}" "$bench_js" --backend webgpu --only train,sample \
    --json "$work/results/$name.json" "$@"
}
torch() { # name args...: the PyTorch baseline on the same shape
  local name=$1
  shift
  if ! python3 -c 'import torch' 2>/dev/null; then
    echo "== torch $name: skipped (no PyTorch here)"
    return
  fi
  if [ ! -f "$torch_dir/torch_unet_baseline.py" ]; then
    echo "== torch $name: skipped (no torch_unet_baseline.py in $torch_dir)"
    return
  fi
  stamp "torch $name"
  (cd "$torch_dir" && PYTHONPATH="$torch_dir" timeout 120 python3 "$repo/bench/gpu/torch_shapes.py" \
    --json "$work/results/$name.json" "$@" | grep -E '"(gpu|torch|device|params|median)"')
}
quickstart() { # i args...: trained and sampled end to end through the CLI
  local i=$1
  shift
  stamp "quickstart with --set backend=webgpu, run $i"
  timeout "$QUICK_TIMEOUT" "${D[@]}" "$cli_js" run experiments/quickstart.json \
    --set backend=webgpu --set train.microBatch=32 "$@" --out "$work/outputs-$i" | tail -n 12
  local run_dir
  run_dir=$(ls -d "$work/outputs-$i"/quickstart/seed-* 2>/dev/null | head -n 1)
  if [ -n "$run_dir" ]; then
    cp "$run_dir/samples.png" "$OUT/samples-$i.png"
    cp "$run_dir/manifest.json" "$work/results/quickstart-$i-manifest.json"
    cp "$run_dir/metrics.jsonl" "$work/results/quickstart-$i-metrics.jsonl"
    cp "$run_dir/checkpoint/model.safetensors" "$work/quickstart-$i-model.safetensors"
    # What trained it: the manifest's backend (engine webgpu or tfjs) and the engine's record.
    "${D[0]}" eval --no-config "const m = JSON.parse(Deno.readTextFileSync('$run_dir/manifest.json'));
      const b = m.backend ?? {};
      const gpu = Object.entries(m).filter(([, v]) => JSON.stringify(v ?? null).includes('Dispatches'));
      console.log('trained by: engine ' + b.engine + ', tfjs ' + b.name + ', adapter ' + b.adapter +
        (gpu.length ? '; ' + JSON.stringify(Object.fromEntries(gpu)) : '; no engine record in the manifest'));"
    sha256sum "$run_dir/samples.png" "$run_dir/metrics.jsonl" "$run_dir/checkpoint/model.safetensors"
  fi
}
same_bytes() { # i j
  stamp "quickstart runs $1 and $2: the same bytes?"
  cmp "$work/results/quickstart-$1-metrics.jsonl" "$work/results/quickstart-$2-metrics.jsonl" &&
    echo "metrics.jsonl: identical bytes"
  cmp "$OUT/samples-$1.png" "$OUT/samples-$2.png" && echo "samples.png: identical bytes"
  cmp "$work/quickstart-$1-model.safetensors" "$work/quickstart-$2-model.safetensors" &&
    echo "checkpoint/model.safetensors: identical bytes"
}
summary() { # the engine beside PyTorch, one row per shape
  stamp summary
  "${D[0]}" eval --no-config "
const dir = '$work/results';
const read = (f) => { try { return JSON.parse(Deno.readTextFileSync(dir + '/' + f + '.json')); } catch { return undefined; } };
const ms = (s) => s === undefined ? '-' : (s * 1000).toFixed(1);
const ratio = (a, b) => a === undefined || b === undefined ? '-' : (a / b).toFixed(2);
console.log('| shape | dispatches/step | encode ms | device MiB | create s | train ms | PyTorch train ms | ratio | forward ms | PyTorch sample ms | ratio |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const [name, torch] of [['course', 'course'], ['wide', 'wide'], ['wide64', 'wide64'], ['anime', '']]) {
  const e = read('webgpu-' + name);
  if (!e) continue;
  const t = torch ? read('torch-$device-' + torch) : undefined;
  const g = e.engine ?? {};
  const tt = t?.train_step?.median, ts = t?.sample_step?.median;
  console.log('| ' + [name + ' ' + e.size + 'x' + e.size + ' b' + e.batch, g.dispatches,
    g.encodeMs?.median?.toFixed(2), (g.peakBytes / 2 ** 20).toFixed(0), g.createSeconds?.toFixed(1),
    ms(e.train?.median), ms(tt), ratio(e.train?.median, tt), ms(e.sample?.median), ms(ts),
    ratio(e.sample?.median, ts)].join(' | ') + ' |');
}
console.log('targets: <= 800 dispatches, <= 3 ms encode; course train and sampling <= 1.0x PyTorch');"
}

stamp "dispatch cost ($dispatches dispatches)"
timeout 120 "${D[@]}" "$dispatch_js" "$dispatches"
bench webgpu-course --size $small --batch $small_batch "${reps[@]}" # the course U-Net (default)
torch torch-$device-course --size $small --batch $small_batch --device $device --threads 16 \
  "${torch_iters[@]}"
if [ -z "${SHORT:-}" ]; then
  bench webgpu-wide --size $big --batch $big_batch "${reps[@]}" --model "$wide"
  torch torch-$device-wide --dim "$wide_dim" --mults 1,1,2,2 --size $big --batch $big_batch \
    --device $device --threads 16 "${torch_iters[@]}"
  bench webgpu-wide64 --size $big --batch $huge_batch "${reps64[@]}" --model "$wide"
  torch torch-$device-wide64 --dim "$wide_dim" --mults 1,1,2,2 --size $big --batch $huge_batch \
    --device $device --threads 16 "${torch_iters[@]}"
  bench webgpu-anime --size $big --batch $big_batch "${reps[@]}" --model "$anime"
fi
summary
quickstart 1 "${quick[@]}"
quickstart 2 "${repeat[@]}"
same_bytes 1 2
tar -C "$work" -cf "$OUT/results.tar" results
stamp done
