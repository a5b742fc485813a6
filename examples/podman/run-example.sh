#!/bin/sh
# run-example.sh WORKDIR : the whole workflow of doc/podman.md, in WORKDIR.
#
#   1. a base image without a registry (make-base.sh + podman import)
#   2. podman build: the last stage prints the composefs digest of the rootfs stage
#   3. the rootfs stage tagged as an image (same build and BUILD_ID, --target rootfs: cache)
#   4. podman save --format oci-archive, cfsctl import-oci: the same digest
#
# PODMAN (default "podman") is the podman command with any global options,
# e.g. PODMAN="podman --root /tmp/s --runroot /tmp/r" for a private storage.
# CFSCTL is the checkout to use (default: the one this script is in); it must
# be built (npm install). Exits 1 when the two digests differ.
set -eu
W=${1:?usage: run-example.sh WORKDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
CFSCTL=${CFSCTL:-$(cd "$HERE/../.." && pwd)}
PODMAN=${PODMAN:-podman}
NODE=$(readlink -f "$(command -v node)")
mkdir -p "$W/context"

"$HERE/make-base.sh" "$W/base" "$NODE"
tar -C "$W/base" --numeric-owner -c . | $PODMAN import - cfsctl-example-base

NODEDIR=$(dirname "$NODE")
if [ "$(basename "$NODE")" != node ]; then NODEDIR="$W/node"; mkdir -p "$NODEDIR"; cp "$NODE" "$NODEDIR/node"; fi
set -- --network=none --build-arg BUILD_ID="$(date +%s.%N)" \
  --build-context cfsctl="$CFSCTL" --build-context node="$NODEDIR" -f "$HERE/Containerfile"
$PODMAN build "$@" -t cfsctl-example-digest "$W/context"
$PODMAN build "$@" --target rootfs -t cfsctl-example-rootfs "$W/context"

inside=$($PODMAN run --rm cfsctl-example-digest cat /digest)
rm -f "$W/rootfs.oci-archive.tar"
$PODMAN save --format oci-archive -o "$W/rootfs.oci-archive.tar" cfsctl-example-rootfs
outside=$("$CFSCTL/bin/cfsctl" --repo "$W/repo" import-oci "$W/rootfs.oci-archive.tar")
echo "inside  (podman build, compute-id): $inside"
echo "outside (import-oci):               $outside"
[ "$inside" = "$outside" ]
