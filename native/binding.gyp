# Built by scripts/build.mjs (npm run build:native), never by npm install: the README's install stays
# fast, and a machine without a compiler or the TPM headers still gets a working provider (the
# software key, with a warning). One addon per platform, each with only its own sources.
{
  "variables": {
    "napi_defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"]
  },
  "targets": [],
  "conditions": [
    ["OS=='linux'", {
      "targets": [{
        "target_name": "darkbloom_tpm",
        "sources": [
          "addon/tpm/addon.cc",
          "addon/tpm/device.cc",
          "addon/tpm/templates.cc"
        ],
        "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
        "defines": ["<@(napi_defines)"],
        "cflags_cc!": ["-fno-exceptions"],
        "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        "libraries": ["<!@(pkg-config --libs tss2-esys tss2-tctildr tss2-mu tss2-rc)"]
      }]
    }],
    ["OS=='mac'", {
      "targets": [{
        "target_name": "darkbloom_keychain",
        "sources": ["addon/keychain/addon.cc", "addon/keychain/keychain.cc"],
        "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
        "defines": ["<@(napi_defines)"],
        "xcode_settings": {
          "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
          "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
          "MACOSX_DEPLOYMENT_TARGET": "13.0",
          "OTHER_CFLAGS": ["-Wall", "-Wextra"]
        },
        "link_settings": {
          "libraries": ["-framework Security", "-framework CoreFoundation"]
        }
      }]
    }]
  ]
}
