#!/usr/bin/env bash
# Make a local stand-in for the Dockerfile's TensorFlow base image, for machines
# that have an engine but no registry: a minimal Debian bookworm with the
# CPU-capable `tensorflow` wheel installed system-wide by root, tagged with the
# given names. Its Python is 3.11.2; the official 2.21 images ship Ubuntu 22.04's
# 3.11.0rc1 (tensorflow/tensorflow#82529). Both are 3.11, which numpy 2.4 and
# scipy 1.17 need, and both predate tarfile's extraction filters (3.11.4), so
# code that needs those fails here as it would in the real image.
#
#   usage: DOCKER_HOST=unix://... docker/build-standin-base.sh TAG [TAG...]
#   e.g.   docker/build-standin-base.sh tensorflow/tensorflow:2.21.0-gpu
#
# Reuses an existing stand-in: first the image in the engine (label below),
# then a cached debootstrap tarball, so only a cold machine pays for both.
set -euo pipefail

die() { echo "build-standin-base: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || die "usage: $0 TAG [TAG...]"
primary=$1
# The TensorFlow version comes from the tag, so the stand-in matches the pin
# the Dockerfile names: tensorflow/tensorflow:2.21.0-gpu -> 2.21.0
tf_version=${primary##*:}
tf_version=${tf_version%%-*}
[[ $tf_version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "no TensorFlow version in tag '$primary'"

cache=${STANDIN_CACHE:-/var/cache/visualize-convnets/standin}
suite=bookworm
label=org.visualize-convnets.standin
mkdir -p "$cache"

tag_all() { for t in "$@"; do docker tag "$primary" "$t"; done; }

if [[ $(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$primary" 2>/dev/null) == "$tf_version" ]]; then
    echo "build-standin-base: reusing $primary"
    tag_all "$@"
    exit 0
fi
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"

# The Debian mirror this machine's apt already reaches (deb822 or one-line format).
mirror=${DEBIAN_MIRROR:-$(
    { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
      grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
    } | grep -m1 -E '/debian/?$' || true)}
mirror=${mirror:-http://deb.debian.org/debian}

rootfs_tar=$cache/$suite-python3-rootfs.tar
if [[ ! -s $rootfs_tar ]]; then
    echo "build-standin-base: debootstrap $suite from $mirror"
    work=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
        "$suite" "$work/root" "$mirror" > "$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/*
    tar -C "$work/root" -cf "$rootfs_tar.part" .
    mv "$rootfs_tar.part" "$rootfs_tar"
fi
os_image=visualize-convnets-standin-os:$suite
docker image inspect "$os_image" >/dev/null 2>&1 || docker import "$rootfs_tar" "$os_image" >/dev/null

# Build steps reach the package index only through this machine's TLS setup
# (its CA bundle) and index. The host's pip config also names local file://
# indexes and /opt/wheels, which do not exist in the image: keep only the real
# index URL and the CA bundle.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx" ${work:+"$work"}' EXIT
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/ca-certificates.crt"
index_url=$(pip config get global.index-url 2>/dev/null || true)
index_url=${PIP_INDEX_URL:-${index_url:-https://pypi.org/simple}}
printf '[global]\nindex-url = %s\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180\n' \
    "$index_url" > "$ctx/pip.conf"

# Mirrors what the official image offers the Dockerfile: `python`, pip that
# installs into the system site-packages as root (no PEP 668 marker), LANG.
cat > "$ctx/Dockerfile" <<EOF
FROM $os_image
ENV LANG=C.UTF-8
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \\
 && ln -s /usr/bin/python3 /usr/local/bin/python \\
 && python -m pip install --no-cache-dir tensorflow==$tf_version \\
 && python -c "import tensorflow as tf; assert tf.__version__ == '$tf_version', tf.__version__; print('stand-in TensorFlow', tf.__version__)"
LABEL $label=$tf_version
CMD ["bash"]
EOF
echo "build-standin-base: installing tensorflow==$tf_version into $primary"
DOCKER_BUILDKIT=0 docker build --network host --pull=false -t "$primary" "$ctx"
tag_all "$@"
