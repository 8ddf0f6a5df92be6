// Shared by the addons' batching cores (llama, mlx): the coded errors every JS error carries.
#pragma once

#include <napi.h>

#include <stdexcept>
#include <string>

namespace darkbloom {

// Every error that reaches JS carries one of these codes (the TS wrappers' error-code unions), so
// callers branch on `code`, never on message text.
namespace code {
inline constexpr const char* kModelLoadFailed = "model_load_failed";
inline constexpr const char* kBadInput = "bad_input";
inline constexpr const char* kContextLengthExceeded = "context_length_exceeded";
inline constexpr const char* kBusy = "busy";
inline constexpr const char* kClosed = "closed";
inline constexpr const char* kEngineFailed = "engine_failed";
}  // namespace code

// Thrown off the JS thread (engine, workers) and turned into a JS error with its code on the JS thread.
struct CodedError : std::runtime_error {
  std::string code;
  CodedError(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

inline Napi::Error JsError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

// With NAPI_CPP_EXCEPTIONS a thrown Napi::Error becomes the JS exception of the current call.
[[noreturn]] inline void Throw(Napi::Env env, const std::string& code, const std::string& message) {
  throw JsError(env, code, message);
}

}  // namespace darkbloom
