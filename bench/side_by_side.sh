#!/usr/bin/env bash
# PyTorch baseline, `deno task bench`, PyTorch baseline again, on the same machine one after the
# other; prints our times (tfjs, and the sampling step through onnxruntime) as ratios to the
# mean of the two PyTorch runs (bench/RESULTS.md).
#
#   bench/side_by_side.sh [extra `deno task bench` flags]
#   TORCH_ARGS="--train-iters 2" bench/side_by_side.sh --only sample,onnx   # sampling only
#
# PyTorch is Debian's python3-torch with OpenBLAS unpacked under $OPENBLAS_DIR (default
# /tmp/ddpm-openblas; never installed system-wide), as ../shared/reference/README.md says.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${TORCH_BASELINE:-../shared/reference/torch_unet_baseline.py}
openblas=${OPENBLAS_DIR:-/tmp/ddpm-openblas}
out=${OUT_DIR:-$(mktemp -d)}
if [ ! -e "$openblas/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3" ]; then
  mkdir -p "$openblas"
  (cd "$openblas" && apt-get download libopenblas0-pthread && dpkg -x libopenblas0-pthread_*.deb .)
fi
torch() {
  OPENBLAS_NUM_THREADS=1 LD_LIBRARY_PATH="$openblas/usr/lib/x86_64-linux-gnu/openblas-pthread" \
    /usr/bin/python3 "$baseline" --size 32 --threads 2 ${TORCH_ARGS:-} --json "$1" > /dev/null
}
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
torch "$out/torch-1.json"
deno run -A bench/mod.ts --json "$out/ours.json" --torch "$out/torch-1.json" "$@"
torch "$out/torch-2.json"
deno eval "
const read = (f) => JSON.parse(Deno.readTextFileSync('$out/' + f));
const ours = read('ours.json');
const t = [read('torch-1.json'), read('torch-2.json')];
const mean = (k) => (t[0][k].median + t[1][k].median) / 2;
const row = (label, k, phase) => {
  if (!ours[phase]) return;
  const r = ours[phase].median / mean(k);
  console.log(label + ': ours ' + (ours[phase].median * 1000).toFixed(0) + ' ms, PyTorch ' +
    t.map((x) => (x[k].median * 1000).toFixed(0)).join(' / ') + ' ms, ratio ' + r.toFixed(2));
};
row('train step', 'train_step', 'train');
row('sampling step', 'sample_step', 'sample');
row('sampling step, onnxruntime', 'sample_step', 'onnx');
if (ours.train) console.log('peak RSS ' + (ours.train.peakRss / 2 ** 20).toFixed(0) + ' MB while training');
if (ours.onnx) {
  console.log('peak RSS ' + (ours.onnx.peakRss / 2 ** 20).toFixed(0) + ' MB while sampling with ' +
    'onnxruntime (the process, tfjs and its workers included)');
}
"
echo "results in $out"
