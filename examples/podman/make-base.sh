#!/bin/sh
# make-base.sh DIR [NODE]
#
# Writes into DIR (emptied first) the root filesystem of a tiny base image made
# without a registry: busybox-static with its applets as symlinks in /bin,
# setcap/getcap (libcap2-bin) and getfattr/setfattr (attr) with their
# libraries, and the shared libraries the Node.js binary NODE (default: the
# `node` on PATH) needs, so that a build stage can run that binary when it is
# bind-mounted in. Node itself is not copied. Every mtime is set to one fixed
# instant so the base layer is the same on every run.
#
# Import it with:  tar -C DIR --numeric-owner -c . | podman import - cfsctl-example-base
set -eu
B=${1:?usage: make-base.sh DIR [NODE]}
NODE=${2:-$(command -v node)}
BUSYBOX=$(command -v busybox)
if ldd "$BUSYBOX" >/dev/null 2>&1; then echo "make-base.sh: $BUSYBOX is dynamically linked: install busybox-static" >&2; exit 1; fi

rm -rf "$B"
mkdir -p "$B/bin" "$B/sbin" "$B/usr/bin" "$B/usr/sbin" "$B/usr/local/bin" "$B/etc" "$B/tmp" "$B/root" "$B/lib64"
cp "$BUSYBOX" "$B/bin/busybox"
for a in $("$B/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$B/bin/$a"
done

# The real tools (busybox has no setcap), and what they and node link against.
cp /usr/sbin/setcap /usr/sbin/getcap "$B/usr/sbin/"
cp /usr/bin/setfattr /usr/bin/getfattr "$B/usr/bin/"
for l in $(ldd /usr/sbin/setcap /usr/sbin/getcap /usr/bin/setfattr /usr/bin/getfattr "$NODE" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do
  d="$B$(dirname "$l")"
  mkdir -p "$d"
  cp -L "$l" "$d/"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$B/lib64/"

chmod 1777 "$B/tmp"
chmod 700 "$B/root"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/etc/passwd"
printf 'root:x:0:\n' > "$B/etc/group"
find "$B" -exec touch -h -d '2024-05-06 07:08:09 UTC' {} +
