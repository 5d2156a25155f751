// One pool of worker threads for the whole process, created on first use and kept: ops
// split their work with parallel_for instead of spawning threads per call.
#pragma once
#include <cstdint>
#include <functional>

namespace lt::cpu {

// Number of threads ops may use (workers + the calling thread). LORA_TRAIN_THREADS overrides
// the default of one per online core.
int num_threads();

// Runs fn(i) for i in [0, n) on the pool and the calling thread; returns when all are done.
// Called from inside a task it runs serially, so ops may nest freely. Exceptions thrown by fn
// are re-thrown in the caller (the first one wins).
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Splits [0, total) into contiguous chunks, at least min_chunk long, one call per chunk.
void parallel_range(int64_t total, int64_t min_chunk, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace lt::cpu
