// Shared by the llama addon's files: coded errors (../common) and llama.cpp's log.
#pragma once

#include <napi.h>

#include <string>

#include "../common/errors.h"

namespace dbllama {

namespace code = ::darkbloom::code;
using ::darkbloom::CodedError;
using ::darkbloom::JsError;
using ::darkbloom::Throw;

// llama.cpp reports why a load or context creation failed only through its log; the addon keeps the
// last error line (per thread) so the JS error can say why instead of just "failed".
void InstallLogHandler();
std::string TakeLastLlamaError();

}  // namespace dbllama
