#!/usr/bin/env bash
# One call on a GPU machine with no Node and no network (the workplace's device, see
# ../shared/device/README.md): unpack the carried Node, build the addon with that machine's
# nvcc, run the CUDA-vs-CPU parity cases and the real-size step, print a table.
# Prepare here:  ../shared/device/pack-node.sh && npm run build:ts
# Run there:     carry .device dist node_modules/node-addon-api node_modules/node-api-headers
#                command: bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .device/node.xz ]; then xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH; fi
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DLORA_TRAIN_CUDA_ARCHS="${ARCHS:-90a}" \
  -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
grep "lora-train:" "$out/cmake.log"
cmake --build build-gpu -j "$(nproc)" > "$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -40; exit 1; }
mkdir -p build/Release && cp build-gpu/lora_train.node build/Release/lora_train.node
( while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$out/memory.txt" 2>/dev/null &
sampler=$!
set +e
LORA_TRAIN_NATIVE="$PWD/build/Release/lora_train.node" node dist/bench/gpu-check.js "$PWD/tests/fixtures" 2>&1 | tee "$out/gpu-check.md"
status=${PIPESTATUS[0]}
kill $sampler 2>/dev/null
echo "peak GPU memory used by lora-train's run (MiB, nvidia-smi): $(sort -n "$out/memory.txt" | tail -n1)"
# The PyTorch reference step at the same size, bf16 autocast + SDPA, in the same call.
echo '[{"id":"torch","kind":"prior_step","device":"cuda","c_in":16,"c":1536,"c_cond":1280,"c_r":64,"depth":32,"nhead":24,"B":8,"H":24,"W":24,"T":77,"rank":8,"minSeconds":5}]' \
  | python3 bench/peer.py | tee "$out/torch.json"
exit $status
