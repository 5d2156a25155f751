{
  "variables": {
    "lora_train_cflags": ["-O3", "-std=c++17", "-fexceptions", "-fvisibility=hidden"]
  },
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED",
                "LORA_TRAIN_VERSION=\"<!(node -p \"require('./package.json').version\")\""],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++14"],
    "cflags_cc": ["<@(lora_train_cflags)"]
  },
  "targets": [
    {
      "target_name": "lora_train",
      "sources": ["<!@(node -p \"require('./native/sources.json').sources.join(' ')\")"],
      "conditions": [
        ["target_arch=='x64'", {"dependencies": ["lora_train_avx2", "lora_train_avx512"]}]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "lora_train_avx2",
          "type": "static_library",
          "sources": ["<!(node -p \"require('./native/sources.json').x64.avx2\")"],
          "cflags_cc": ["-mavx2", "-mfma", "-fPIC"]
        },
        {
          "target_name": "lora_train_avx512",
          "type": "static_library",
          "sources": ["<!(node -p \"require('./native/sources.json').x64.avx512\")"],
          "cflags_cc": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma", "-fPIC", "-Wno-maybe-uninitialized", "-Wno-uninitialized"]
        }
      ]
    }]
  ]
}
