// JS class `Collective` (src/parallel/group.ts uses it): one process's membership in a data-parallel
// group. `connect()` meets the other processes through the rendezvous store on a worker thread;
// `allreduce` and `broadcast` run there too and return Promises.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>

#include "../napi_call.h"
#include "collective.h"

namespace lt {

// A connected collective and the lock that keeps its calls one at a time.
struct SharedCollective {
  std::unique_ptr<Collective> collective;
  std::mutex mutex;
};

// The connected collective a JS `Collective` holds (argument i of the call), or a TypeError.
std::shared_ptr<SharedCollective> collective_arg(OpCall& call, size_t i);

void register_collective(Napi::Env env, Napi::Object exports);

}  // namespace lt
