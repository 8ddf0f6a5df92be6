// The MLX addon's argument parsing (js_options.cc): JS values to the core's config and options.
#pragma once

#include <napi.h>

#include <cstdint>

#include "engine.h"

namespace dbmlx {

// A JS number, or NaN for anything else.
double Num(Napi::Value v);
// o[key] as an integer in [min, max]; `fallback` when absent. Throws bad_input otherwise.
int32_t IntOption(Napi::Env env, Napi::Object o, const char* key, int32_t fallback, int64_t min, int64_t max);
// o[key] as a finite float; `fallback` when absent. Throws bad_input otherwise.
float FloatOption(Napi::Env env, Napi::Object o, const char* key, float fallback);
// loadModel's config: the checkpoint's hyperparameters and its safetensors files.
ModelConfig ParseConfig(Napi::Env env, Napi::Value value);
// createScheduler's options for a model of `model`'s shape.
SchedulerOptions ParseSchedulerOptions(Napi::Env env, Napi::Object o, const ModelConfig& model);

}  // namespace dbmlx
