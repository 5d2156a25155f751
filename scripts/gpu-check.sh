#!/usr/bin/env bash
# One call on a GPU machine that may have no Node and no network: unpack a carried Node binary
# (.device/node.xz, xz-compressed, when present), build the addon with that machine's nvcc, run
# the CUDA-vs-CPU parity cases, the flash-attention kernels' TFLOP/s (mma.sync and WMMA) beside
# PyTorch's SDPA at the prior's attention shape, the real-size bf16 LoRA step, then the PyTorch
# reference step (bf16 weights, autocast, SDPA) at the same size; a 1024x1024 picture from the
# image embeddings (decoder 12 steps + VQGAN) beside diffusers in bf16; print a table. With two GPUs or more, also
# the NCCL gradient sum of data-parallel training (tests/gpu-ddp-check.ts).
# Prepare here:  put the Node binary at .device/node.xz and run npm run build:ts
# Run there:     with .device dist node_modules/node-addon-api node_modules/node-api-headers
#                node_modules/zod copied along: bash scripts/gpu-check.sh   (SKIP_PARITY=1 times the
#                steps only; each part stops after PART_SECONDS, 240 by default, so a hung kernel
#                cannot spend the machine's whole loan)
# Check the JS side here first, at a tiny size on the CPU emulator's CUDA device (npm test builds it):
#   LORA_TRAIN_NATIVE=build-emulator/Release/lora_train.node node dist/tests/gpu-check.js --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .device/node.xz ]; then xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH; fi
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "gpu-check: no nvcc on PATH or in /usr/local/cuda/bin"; exit 1; }
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
echo "nvcc $(nvcc --version | tail -n1); $(python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -n1)" | tee -a "$out/gpu.txt"
part() { timeout --kill-after=10 "${PART_SECONDS:-240}" "$@"; }

# cuBLASLt: its header for the build, its library for the run (the toolkit's, else the
# nvidia-cublas wheel PyTorch brings).
site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)
nvcc_include="$(dirname "$(dirname "$(command -v nvcc)")")/include"
if [ ! -f "$nvcc_include/cublasLt.h" ]; then
  header=$(find $site /usr/local/cuda*/ -name cublasLt.h 2>/dev/null | head -n1 || true)
  [ -n "$header" ] && export CUBLASLT_INCLUDE_DIR="$(dirname "$header")"
fi
major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')  # the build opens libcublasLt.so.<major>
if ! ldconfig -p 2>/dev/null | grep -q "libcublasLt\.so\.$major "; then
  lib=$(find /usr/local/cuda*/ $site -name "libcublasLt.so.$major*" 2>/dev/null | head -n1 || true)
  [ -n "$lib" ] && export LORA_TRAIN_CUBLASLT="$lib"
fi
echo "cuBLASLt header: ${CUBLASLT_INCLUDE_DIR:-$nvcc_include}; library: ${LORA_TRAIN_CUBLASLT:-found by the dynamic loader}"
# NCCL likewise, for the data-parallel check on two GPUs or more (the nvidia-nccl wheel PyTorch brings).
if [ ! -f "$nvcc_include/nccl.h" ]; then
  header=$(find $site /usr/include /usr/local/cuda*/ -name nccl.h 2>/dev/null | head -n1 || true)
  [ -n "$header" ] && export NCCL_INCLUDE_DIR="$(dirname "$header")"
fi
if ! ldconfig -p 2>/dev/null | grep -q "libnccl\.so\.2 "; then
  lib=$(find $site /usr/local/cuda*/ -name "libnccl.so.2" 2>/dev/null | head -n1 || true)
  [ -n "$lib" ] && export LORA_TRAIN_NCCL="$lib"
fi

cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DLORA_TRAIN_CUDA_ARCHS="${ARCHS:-90a}" \
  -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
grep "lora-train:" "$out/cmake.log"
cmake --build build-gpu -j "$(nproc)" > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -40; exit 1; }
mkdir -p build/Release && cp build-gpu/lora_train.node build/Release/lora_train.node

# Peak memory of each process as nvidia-smi sees it (CUDA context included for both).
sample() { ( while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$1" 2>/dev/null & echo $!; }
peak() { sort -n "$1" | tail -n1; }
set +e
export LORA_TRAIN_NATIVE="$PWD/build/Release/lora_train.node"
status=0
# Parity and timing in separate processes: a kernel fault poisons its process's CUDA context.
if [ -z "${SKIP_PARITY:-}" ]; then
  part node dist/tests/gpu-check.js "$PWD/tests/fixtures" --parity-only 2>&1 | tee "$out/parity.md"
  status=${PIPESTATUS[0]}
fi
sampler=$(sample "$out/memory-lora-train.txt")
part node dist/tests/gpu-check.js --no-parity 2>&1 | tee "$out/step.json"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
kill "$sampler" 2>/dev/null
echo '[{"id":"torch_sdpa","kind":"sdpa","B":8,"H":24,"N":576,"M":653,"d":64}]' | part python3 bench/peer.py | tee "$out/sdpa.json"
sampler=$(sample "$out/memory-torch.txt")
echo '[{"id":"torch","kind":"prior_step","device":"cuda","c_in":16,"c":1536,"c_cond":1280,"c_r":64,"depth":32,"nhead":24,"B":8,"H":24,"W":24,"T":77,"rank":8,"minSeconds":5}]' \
  | part python3 bench/peer.py | tee "$out/torch.json"
kill "$sampler" 2>/dev/null
echo '[{"id":"torch_picture","kind":"picture","side":256,"T":77,"steps":12,"minSeconds":5}]' | part python3 bench/peer.py | tee "$out/picture-torch.json"
echo "peak GPU memory (MiB, nvidia-smi, whole process): lora-train $(peak "$out/memory-lora-train.txt"), torch $(peak "$out/memory-torch.txt")"
# Data parallelism: two processes, one GPU each, sum their LoRA gradients with NCCL.
if [ "$(nvidia-smi --list-gpus | wc -l)" -ge 2 ]; then
  part node dist/tests/gpu-ddp-check.js 2>&1 | tee "$out/ddp.json"
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
else
  echo "gpu-check: one GPU: the NCCL data-parallel check needs two (skipped)"
fi
exit $status
