#!/bin/sh
# import-oci-image.sh CACHE: the test image of bench/import-oci.mjs, built once
# and kept in CACHE (default /var/tmp/cfsctl-bench):
#   CACHE/rootfs/        debootstrap --variant=minbase bookworm (needs root and
#                        the Debian mirror, $DEBIAN_MIRROR or deb.debian.org)
#   CACHE/oci/image/     OCI layout built with umoci: tags layer1 (the rootfs),
#                        layer2 (usr/share/doc removed, files added), layer3
#                        (edits below etc/), latest (= layer3); gzip layers
#   CACHE/oci/bundle/    the umoci bundle the layers were repacked from; its
#                        rootfs/ is the source tree of layer3
# Each step is skipped when its result is already there (remove it to redo).
set -eu
CACHE="${1:-${CFSCTL_BENCH_CACHE:-/var/tmp/cfsctl-bench}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$CACHE"
cd "$CACHE"
say() { printf '[import-oci-image] %s\n' "$*" >&2; }

if [ ! -e rootfs.done ]; then
  say "debootstrap --variant=minbase bookworm $CACHE/rootfs ($MIRROR); a few minutes"
  rm -rf rootfs rootfs.tmp
  debootstrap --variant=minbase bookworm rootfs.tmp "$MIRROR" > debootstrap.log 2>&1 \
    || { tail -20 debootstrap.log >&2; exit 1; }
  # as a published image: no downloaded packages, no apt lists or caches
  rm -rf rootfs.tmp/var/cache/apt/archives/*.deb rootfs.tmp/var/lib/apt/lists/* rootfs.tmp/var/cache/apt/*.bin
  mv rootfs.tmp rootfs
  touch rootfs.done
fi

if [ ! -e oci.done ]; then
  say "umoci layout $CACHE/oci/image (3 layers)"
  rm -rf oci
  mkdir oci
  cd oci
  umoci init --layout image
  umoci new --image image:empty
  umoci unpack --image image:empty bundle
  tar -C ../rootfs --xattrs --xattrs-include='*' --numeric-owner -cpf - . \
    | tar -C bundle/rootfs --xattrs --xattrs-include='*' --numeric-owner -xpf -
  umoci repack --refresh-bundle --history.created_by "debootstrap --variant=minbase bookworm" --image image:layer1 bundle
  sleep 1.1

  # layer 2: documentation removed, an application tree added
  R=bundle/rootfs
  rm -rf "$R/usr/share/doc"
  mkdir -p "$R/usr/share/doc" "$R/opt/app/bin" "$R/opt/app/lib" "$R/opt/app/share"
  i=0
  while [ $i -lt 40 ]; do
    d="$R/opt/app/share/d$i"
    mkdir -p "$d"
    j=0
    while [ $j -lt 50 ]; do
      # sizes from 0 to ~60 KB, text that does not repeat between files
      n=$(( (i * 50 + j) * 7919 % 61000 ))
      { printf 'file %d/%d\n' $i $j; seq $((i * 50 + j)) $((i * 50 + j + n / 7)); } | head -c $n > "$d/f$j.txt"
      j=$((j + 1))
    done
    i=$((i + 1))
  done
  head -c 33554432 /dev/urandom > "$R/opt/app/lib/blob.bin"          # 32 MiB, incompressible
  cp "$R/usr/bin/bash" "$R/opt/app/bin/app"
  ln "$R/opt/app/bin/app" "$R/opt/app/bin/app-hardlink"
  ln -s ../lib/blob.bin "$R/opt/app/bin/blob-link"
  ln -s /opt/app/bin/app "$R/usr/local/bin/app"
  setfattr -n user.bench -v layer2 "$R/opt/app/bin/app"
  printf 'documentation removed in layer 2\n' > "$R/usr/share/doc/README"
  umoci repack --refresh-bundle --history.created_by "import-oci-image.sh layer2" --image image:layer2 bundle
  sleep 1.1

  # layer 3: configuration edits below /etc
  printf 'app:x:1000:1000:App:/opt/app:/usr/sbin/nologin\n' >> "$R/etc/passwd"
  printf 'app:x:1000:\n' >> "$R/etc/group"
  printf 'app:*:19000:0:99999:7:::\n' >> "$R/etc/shadow"
  printf 'bench-host\n' > "$R/etc/hostname"
  printf 'Welcome to the cfsctl import-oci benchmark image\n' > "$R/etc/motd"
  rm -rf "$R/etc/cron.daily"
  rm -f "$R/etc/issue.net"
  mkdir -p "$R/etc/app"
  printf 'listen = 8080\nworkers = 4\n' > "$R/etc/app/app.conf"
  chmod 0640 "$R/etc/app/app.conf"
  chown 1000:1000 "$R/etc/app/app.conf"
  printf 'APT::Install-Recommends "false";\n' > "$R/etc/apt/apt.conf.d/99norecommends"
  umoci repack --refresh-bundle --history.created_by "import-oci-image.sh layer3" --image image:layer3 bundle
  umoci tag --image image:layer3 latest
  cd ..
  touch oci.done
fi
say "ready: $CACHE/oci/image:latest"
