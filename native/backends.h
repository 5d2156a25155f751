// The backends this build contains, by the name JS passes as `device`.
#pragma once
#include <string>

#include "napi_call.h"
#include "ops.h"

namespace lt {

// Throws a JS Error naming the built backends when `device` (argument i) is not one of them.
Ops& backend_for(OpCall& call, size_t i);

}  // namespace lt
