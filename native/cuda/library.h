// Opening the CUDA libraries the backend loads at run time (cuBLASLt, NCCL): the file an
// environment variable names, else the soname on the loader's path, then $CUDA_HOME/lib64 and
// /usr/local/cuda/lib64; and their entry points by name.
#pragma once
#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

namespace lt::cuda {

// The first of the candidate files that loads, or nullptr with *tried listing them.
inline void* open_library(const char* env_var, const std::string& soname, std::string* tried) {
  std::vector<std::string> files;
  if (const char* file = std::getenv(env_var)) files.push_back(file);
  files.push_back(soname);
  if (const char* home = std::getenv("CUDA_HOME")) files.push_back(std::string(home) + "/lib64/" + soname);
  files.push_back("/usr/local/cuda/lib64/" + soname);
  for (const std::string& f : files) {
    if (void* lib = dlopen(f.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    *tried += (tried->empty() ? "" : ", ") + f;
  }
  return nullptr;
}

// fn = the library's symbol `name`; a missing one is added to *missing.
template <typename F>
void load_symbol(void* lib, F& fn, const char* name, std::string* missing) {
  fn = reinterpret_cast<std::remove_reference_t<F>>(dlsym(lib, name));
  if (!fn) *missing += (missing->empty() ? "" : ", ") + std::string(name);
}

}  // namespace lt::cuda
