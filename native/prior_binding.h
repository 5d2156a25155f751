#pragma once
#include <napi.h>

namespace lt {
void register_prior(Napi::Env env, Napi::Object exports);
}
