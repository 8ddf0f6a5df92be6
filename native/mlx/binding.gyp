# The MLX addon, built by scripts/build-mlx.mjs only where an MLX installation is found (never by npm
# install); the script passes its prefix (include/ and lib/) in DARKBLOOM_MLX_DIR. MLX's headers need
# C++20. The addon links libmlx dynamically, with an rpath to the directory it was found in.
{
  "variables": {
    "mlx_dir%": "<!(node -p \"process.env.DARKBLOOM_MLX_DIR || ''\")"
  },
  "targets": [{
    "target_name": "darkbloom_mlx",
    "sources": [
      "../addon/mlx/addon.cc",
      "../addon/mlx/engine.cc",
      "../addon/mlx/js_options.cc",
      "../addon/mlx/transformer.cc",
      "../addon/common/host_sampler.cc",
      "../addon/common/logprobs.cc",
      "../addon/common/outbox.cc",
      "../addon/common/request_book.cc",
      "../addon/common/sampling_params.cc",
      "../addon/common/scheduler_js.cc"
    ],
    "include_dirs": [
      "<!(node -p \"require('node-addon-api').include_dir\")",
      "<(mlx_dir)/include"
    ],
    "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
    "cflags_cc": ["-std=c++20", "-fexceptions", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                  "-Wno-unused-parameter"],
    "libraries": ["-L<(mlx_dir)/lib", "-lmlx", "-Wl,-rpath,<(mlx_dir)/lib"],
    "conditions": [
      ["OS=='mac'", {
        "xcode_settings": {
          "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
          "GCC_ENABLE_CPP_RTTI": "YES",
          "CLANG_CXX_LANGUAGE_STANDARD": "c++20",
          "MACOSX_DEPLOYMENT_TARGET": "14.0",
          "OTHER_CFLAGS": ["-Wall", "-Wextra"]
        }
      }]
    ]
  }]
}
