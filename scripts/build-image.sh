#!/usr/bin/env bash
# Builds Tern's self-contained sidecar image as an OCI image layout, without a container daemon:
# a static `tern` (glibc, +crt-static) in one gzip layer, written with tar, gzip and sha256sum.
#
#   scripts/build-image.sh [--out DIR] [--tag TAG] [--profile PROFILE] [--binary PATH]
#
# --out      the OCI layout directory to (re)create (default: <target>/image/oci)
# --tag      the reference name in index.json (default: the crate version)
# --profile  the cargo profile of the static build (default: release)
# --binary   use this static tern instead of building one
#
# The static build goes to <target>/image (<target> = $CARGO_TARGET_DIR or ./target), apart from
# the normal builds since its RUSTFLAGS differ; a second run reuses it. The layer is reproducible:
# same binary and SOURCE_DATE_EPOCH (default 0), same digests.
#
# Layer: /usr/local/bin/tern (0755), /usr/local/bin/envoy -> tern (where pilot-agent looks),
# /etc/istio/proxy and /var/lib/istio/data owned by 1337 (bootstrap, XDS socket, admin profile),
# /tmp (1777), /etc/passwd and /etc/group naming istio-proxy. Config: user 1337:1337, working
# directory / (Istio's bootstrap names its sockets relative to it), entrypoint tern.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_triple="x86_64-unknown-linux-gnu"
target_dir="${CARGO_TARGET_DIR:-$repo/target}/image"
out="$target_dir/oci"
tag=""
profile="release"
binary=""

while [ "$#" -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    *) echo "build-image.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

die() { echo "build-image.sh: $*" >&2; exit 1; }

# Static glibc has no dlsym for its own symbols, so getrandom 0.3 would not find getrandom(2) and
# would read /dev/urandom instead, which a bare root file system lacks: use the call directly.
static_rustflags='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'

if [ -z "$binary" ]; then
  # Only the target's artifacts link statically; with --target, build scripts and proc-macros
  # stay ordinary host binaries.
  unset CARGO_ENCODED_RUSTFLAGS
  # iptables-init is built beside tern for proxy/image/Dockerfile's `prebuilt` stage; this image
  # has no iptables for it to drive, so it is not in the layer.
  echo "build-image.sh: building static tern and iptables-init ($profile) in $target_dir" >&2
  RUSTFLAGS="$static_rustflags" "${CARGO:-cargo}" build \
    --manifest-path "$repo/Cargo.toml" -p tern -p iptables-init --bins --locked \
    --profile "$profile" --target "$target_triple" --target-dir "$target_dir"
  profile_dir="$profile"
  if [ "$profile" = "dev" ]; then profile_dir="debug"; fi
  binary="$target_dir/$target_triple/$profile_dir/tern"
fi
[ -x "$binary" ] || die "no executable at $binary"
# An image without a libc can only run a binary that needs no loader.
kind="$(file -L "$binary")"
[[ "$kind" == *"statically linked"* || "$kind" == *"static-pie linked"* ]] || die "$binary is not statically linked"

version="$("$binary" --version)"
version="${version#tern }"
[[ "$version" =~ ^[0-9A-Za-z.+-]+$ ]] || die "unexpected version string: $version"
tag="${tag:-$version}"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid tag: $tag"
epoch="${SOURCE_DATE_EPOCH:-0}"
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The file system, staged with exact modes; owners are set when archiving.
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/istio/proxy" "$root/var/lib/istio/data" "$root/tmp"
cp "$binary" "$root/usr/local/bin/tern"
ln -s tern "$root/usr/local/bin/envoy"
printf 'root:x:0:0:root:/root:/sbin/nologin\nistio-proxy:x:1337:1337:istio-proxy:/tmp:/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nistio-proxy:x:1337:\n' >"$root/etc/group"
find "$root" -type d -exec chmod 0755 {} +
chmod 0755 "$root/usr/local/bin/tern"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"

# Parents before children; root-owned entries first, then the directories the proxy writes to.
tar_opts=(--format=ustar --no-recursion --mtime="@$epoch" --numeric-owner -C "$root")
layer_tar="$work/layer.tar"
tar --create --file="$layer_tar" --owner=0 --group=0 "${tar_opts[@]}" \
  etc etc/group etc/istio etc/passwd tmp usr usr/local usr/local/bin \
  usr/local/bin/envoy usr/local/bin/tern var var/lib var/lib/istio
tar --append --file="$layer_tar" --owner=1337 --group=1337 "${tar_opts[@]}" \
  etc/istio/proxy var/lib/istio/data

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
blobs="$out/blobs/sha256"

diff_id="$(sha256 "$layer_tar")"
gzip -n <"$layer_tar" >"$work/layer.tar.gz"
layer_digest="$(sha256 "$work/layer.tar.gz")"
layer_size="$(size "$work/layer.tar.gz")"
mv "$work/layer.tar.gz" "$blobs/$layer_digest"

# Every value written into JSON below is checked above to need no escaping.
config="$work/config.json"
printf '%s' \
  '{"created":"'"$created"'","architecture":"amd64","os":"linux",' \
  '"config":{"User":"1337:1337",' \
  '"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],' \
  '"Entrypoint":["/usr/local/bin/tern"],' \
  '"Cmd":["-c","/etc/istio/proxy/envoy-rev.json"],' \
  '"WorkingDir":"/",' \
  '"Labels":{"org.opencontainers.image.title":"tern","org.opencontainers.image.version":"'"$version"'"}},' \
  '"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},' \
  '"history":[{"created":"'"$created"'","created_by":"scripts/build-image.sh"}]}' \
  >"$config"
config_digest="$(sha256 "$config")"
config_size="$(size "$config")"
mv "$config" "$blobs/$config_digest"

manifest="$work/manifest.json"
printf '%s' \
  '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
  '"config":{"mediaType":"application/vnd.oci.image.config.v1+json",' \
  '"digest":"sha256:'"$config_digest"'","size":'"$config_size"'},' \
  '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",' \
  '"digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' \
  >"$manifest"
manifest_digest="$(sha256 "$manifest")"
manifest_size="$(size "$manifest")"
mv "$manifest" "$blobs/$manifest_digest"

printf '%s' \
  '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",' \
  '"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
  '"digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"',' \
  '"platform":{"architecture":"amd64","os":"linux"},' \
  '"annotations":{"org.opencontainers.image.ref.name":"'"$tag"'"}}]}' \
  >"$out/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"

echo "build-image.sh: $out:$tag (manifest sha256:$manifest_digest, layer $layer_size bytes)" >&2
echo "$out"
