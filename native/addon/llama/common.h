// Shared by the llama addon's files: the batching cores' common pieces (../common: coded errors, the
// batch types, the request book) and llama.cpp's log.
#pragma once

#include <napi.h>

#include <string>

#include "../common/batch_types.h"
#include "../common/errors.h"
#include "../common/request_book.h"

namespace dbllama {

// The addon is built on the batching cores' shared pieces: their names are used unqualified.
using namespace ::darkbloom;

// llama.cpp reports why a load or context creation failed only through its log; the addon keeps the
// last error line (per thread) so the JS error can say why instead of just "failed".
void InstallLogHandler();
std::string TakeLastLlamaError();

}  // namespace dbllama
