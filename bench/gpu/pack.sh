#!/usr/bin/env bash
# Fills .gpu/ (git-ignored) with everything bench/gpu/run.sh needs on a machine that reaches no
# package registry and has no Deno: the Deno binary (xz), the CLI, the benchmark (with the
# compiled WebGPU engine's part, bench/engine_bench.ts), the gradient worker, the adapter probe and
# the dispatch benchmark as bundles (deno bundle: tfjs, its wasm backend and src/gpu's engine
# inside), sharp's linux-x64 binaries (a native addon cannot be bundled), the wasm binaries, the
# Vulkan loader packages, and a copy of the PyTorch baseline (torch_unet_baseline.py from
# $SHARED_REFERENCE, default ../shared/reference, else the main checkout's when this is a git
# worktree). At most 64 MiB: the device tool's limit.
#
# ONNX Runtime stays out of the bundles (`--external onnxruntime-node`: it is imported only when
# a run samples through it, and the GPU machine samples through the WebGPU engine).
#
#   bench/gpu/pack.sh            # then: the device tool runs `bash bench/gpu/run.sh`, carry .gpu
#   bench/gpu/pack.sh --check    # only the bundles, in a temporary folder, and the CLI bundle
#                                # started there without node_modules (tests/bench_pack_test.ts)
set -euo pipefail
cd "$(dirname "$0")/../.."
check=${1:-}
if [ "$check" = --check ]; then out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; else out=.gpu; rm -rf "$out"; fi
mkdir -p "$out/app/node_modules/@img" "$out/debs"

deno_cmd() { if command -v deno >/dev/null; then deno "$@"; else npx -y deno@2.9.6 "$@"; fi; }
# A fresh clone installs the npm packages (offline-safe where the lockfile's are cached).
[ -d node_modules/.deno ] || deno_cmd install >/dev/null 2>&1 || deno_cmd install

# 1. Deno itself.
deno_bin=$(deno_cmd eval 'console.log(Deno.execPath())')
echo "deno: $deno_bin ($(deno_cmd --version | head -n 1))"
[ "$check" = --check ] || xz -T2 -6 -c "$deno_bin" >"$out/deno.xz"

# 2. Bundles. Emscripten's glue (the wasm backend) reads __dirname, which an ES module lacks: each
#    bundle defines it first. The bundle starts gradient workers from ./worker.ts beside it.
bundle() { # entry output
  deno_cmd bundle --quiet --platform deno --external onnxruntime-node -o "$out/app/bundle.tmp.js" "$1"
  { echo 'var __dirname = import.meta.dirname, __filename = import.meta.filename;'
    cat "$out/app/bundle.tmp.js"; } >"$out/app/$2"
  rm "$out/app/bundle.tmp.js"
}
bundle mod.ts ddpm.js
bundle bench/mod.ts bench.js
bundle src/train/parallel/worker.ts worker.ts
bundle bench/gpu/adapter.ts adapter.js
bundle bench/gpu/dispatch.ts dispatch.js
store=node_modules/.deno
cp "$store"/@tensorflow+tfjs-backend-wasm@*/node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm*.wasm \
  "$out/app/"
cp -rL "$store"/@img+sharp-linux-x64@*/node_modules/@img/sharp-linux-x64 "$out/app/node_modules/@img/"
cp -rL "$store"/@img+sharp-libvips-linux-x64@*/node_modules/@img/sharp-libvips-linux-x64 \
  "$out/app/node_modules/@img/"
if [ "$check" = --check ]; then
  # The CLI bundle starts where there is no node_modules but sharp's (as on the GPU machine).
  (cd "$out/app" && "$deno_bin" run -A --no-config ddpm.js --help) | head -n 3
  echo "pack --check: the bundles build and the CLI bundle starts"
  exit 0
fi
reference=${SHARED_REFERENCE:-../shared/reference}
if [ ! -f "$reference/torch_unet_baseline.py" ]; then # a worktree: the main checkout's sibling
  main_checkout=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null)")
  reference=$main_checkout/../shared/reference
fi
if [ -f "$reference/torch_unet_baseline.py" ]; then
  cp "$reference/torch_unet_baseline.py" "$out/app/"
else
  echo "warning: no torch_unet_baseline.py (set SHARED_REFERENCE): run.sh will skip PyTorch" >&2
fi
cp bench/gpu/torch_shapes.py "$out/app/"
tar -C "$out" -cJf "$out/app.tar.xz" app
rm -rf "$out/app"

# 3. The Vulkan loader (and GL/EGL dispatch) for the NVIDIA driver's ICD, as Debian packages.
lists=/tmp/ddpm-gpu-apt-lists
mkdir -p "$lists/partial"
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt_opts[@]}" update -qq
(cd "$out/debs" && apt-get "${apt_opts[@]}" download -qq libvulkan1 libegl1 libglvnd0 libgl1 libglx0)

du -sh "$out" "$out"/*
total=$(du -sm "$out" | cut -f1)
if [ "$total" -gt 60 ]; then echo "error: $out is ${total} MiB (the device tool carries 64 MiB)" >&2; exit 1; fi
echo "packed $out (${total} MiB): run bench/gpu/run.sh with carry [\".gpu\"]"
