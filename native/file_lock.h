// Advisory file locks (flock) for the Hub cache: the lock Python's huggingface_hub takes beside a
// blob it downloads (through the filelock package), so lora-train processes and Python ones each
// download a file once. The kernel drops a lock when its process dies: no stale locks.
#pragma once
#include <napi.h>

namespace lt {

// tryLockFile(path): the descriptor holding an exclusive lock on path (created if missing), or
// -1 when another descriptor holds it. unlockFile(fd) releases it.
void register_file_lock(Napi::Env env, Napi::Object exports);

}  // namespace lt
