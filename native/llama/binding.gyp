# The llama addon, built by scripts/build-llama.mjs after it has built llama.cpp's static libraries
# into ../build/llama.cpp-build (-cuda, -metal for those backends; never by npm install). Its own gyp
# file, so a machine without tss2 still builds it and the TPM addon's build is untouched. What it
# links (the backend's archives, CUDA's libraries, macOS's frameworks) is written by build-llama.mjs
# to ../build/llama-link.gypi.
{
  "includes": ["../build/llama-link.gypi"],
  "variables": {
    "llama_src": "<(module_root_dir)/../build/llama.cpp"
  },
  "targets": [{
    "target_name": "darkbloom_llama",
    "sources": [
      "../addon/llama/addon.cc",
      "../addon/llama/engine.cc",
      "../addon/llama/model.cc",
      "../addon/llama/sampling.cc",
      "../addon/llama/scheduler.cc",
      "../addon/common/logprobs.cc",
      "../addon/common/outbox.cc",
      "../addon/common/request_book.cc",
      "../addon/common/sampling_params.cc",
      "../addon/common/scheduler_js.cc"
    ],
    "include_dirs": [
      "<!(node -p \"require('node-addon-api').include_dir\")",
      "<(llama_src)/include",
      "<(llama_src)/ggml/include"
    ],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
    "conditions": [
      ["OS=='linux'", {
        "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
        "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        "libraries": [
          # A group: llama → ggml → ggml-cpu (ggml-cuda) → ggml-base reference each other both ways.
          "-Wl,--start-group",
          "<@(llama_archives)",
          "-Wl,--end-group",
          "<@(llama_link_flags)",
          # Keep llama.cpp's symbols out of the addon's dynamic symbol table: node-llama-cpp's own copy
          # may be loaded in the same process.
          "-Wl,--exclude-libs,ALL",
          "-lpthread",
          "-ldl",
          "-lm"
        ]
      }],
      # macOS's linker searches every archive for what is still undefined (no group needed), and its
      # two-level namespaces keep node-llama-cpp's copy of llama.cpp apart from ours.
      ["OS=='mac'", {
        "xcode_settings": {
          "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
          "GCC_ENABLE_CPP_RTTI": "YES",
          "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
          "MACOSX_DEPLOYMENT_TARGET": "13.0",
          "OTHER_CFLAGS": ["-Wall", "-Wextra", "-Wno-missing-field-initializers"]
        },
        "libraries": ["<@(llama_archives)", "<@(llama_link_flags)"]
      }]
    ]
  }]
}
