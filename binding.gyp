{
  "targets": [
    {
      "target_name": "cfsctl_native",
      "sources": ["native/cfsctl_native.c", "native/sha256_4k.c"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
