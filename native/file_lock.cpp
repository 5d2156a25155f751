#include "file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace lt {
namespace {

Napi::Value TryLockFile(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "tryLockFile: expected a path string");
  const std::string path = info[0].As<Napi::String>();
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Napi::Error::New(env, path + ": cannot open the lock file (" + std::strerror(errno) + ")");
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Number::New(env, fd);
  const int err = errno;
  close(fd);
  if (err == EWOULDBLOCK) return Napi::Number::New(env, -1);
  throw Napi::Error::New(env, path + ": cannot lock (" + std::strerror(err) + ")");
}

Napi::Value UnlockFile(const Napi::CallbackInfo& info) {
  if (info.Length() != 1 || !info[0].IsNumber())
    throw Napi::TypeError::New(info.Env(), "unlockFile: expected a descriptor from tryLockFile");
  const int fd = info[0].As<Napi::Number>().Int32Value();
  flock(fd, LOCK_UN);
  close(fd);
  return info.Env().Undefined();
}

}  // namespace

void register_file_lock(Napi::Env env, Napi::Object exports) {
  exports.Set("tryLockFile", Napi::Function::New(env, TryLockFile));
  exports.Set("unlockFile", Napi::Function::New(env, UnlockFile));
}

}  // namespace lt
