#!/usr/bin/env bash
# The native addon built with AddressSanitizer and UndefinedBehaviorSanitizer,
# then the tests that drive it (scanning, hashing, writing and naming
# objects, fs-verity ioctls, reading layers, files replaced behind the
# hashers, interrupted runs) and a scan of /usr/share run against that build.
# Any report fails.
# Usage: bash test/native-sanitizers.sh   (needs gcc with libasan and libubsan)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
nodeinc="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node"
gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
  -std=gnu11 -Wall -Wextra -Wno-unused-parameter -I"$nodeinc" \
  -o "$out/cfsctl_native.node" native/cfsctl_native.c native/sha256_4k.c
npx tsc -p tsconfig.json
export CFSCTL_NATIVE_ADDON="$out/cfsctl_native.node"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# Node's own allocations are not ours to judge; the tree generator's tools are not run.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
node test/run.mjs test/native.test.ts test/fsverity.test.ts test/repository.test.ts test/oci.test.ts test/oci-hostile.test.ts test/writer-assets.test.ts test/replaced-files.test.ts test/interrupt.test.ts
./bin/cfsctl compute-id /usr/share > "$out/a"
CFSCTL_NATIVE=0 ./bin/cfsctl compute-id /usr/share > "$out/b"
cmp "$out/a" "$out/b"
echo "sanitizer run clean: $(cat "$out/a")"
