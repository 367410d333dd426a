#!/usr/bin/env bash
# Builds target/debian/udptee_<version>_<arch>.deb from a staged tree with dpkg-deb (no debian/
# source package needed): /usr/bin/udptee and udptee-loadgen, the systemd unit (installed disabled),
# /etc/udptee/udptee.toml as a conffile (the commented example), man pages and shell completions
# generated from the binary's own clap definitions, and the README, operations guide and copyright
# under /usr/share/doc/udptee. The binaries are stripped, as Debian ships them; their symbols and
# line tables go into udptee-dbgsym_<version>_<arch>.deb beside it (/usr/lib/debug/.build-id, where
# perf, gdb and Rust backtraces find them), unless DBGSYM=0. Prints the package's path.
#
#   scripts/package-deb.sh                 # the release build with line tables (release-dbg),
#                                          # stripped into the package, kept in the dbgsym one
#   PROFILE=dev scripts/package-deb.sh     # from the debug build
#   BIN_DIR=target/debug OUT=/tmp/p scripts/package-deb.sh   # binaries already built (the install
#                                          # test), the package into OUT
#   lintian target/debian/udptee_*.deb     # .ci/packages.sh installs lintian
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release-dbg}
case $PROFILE in
  dev) dir=debug ;;
  *) dir=$PROFILE ;;
esac
if [[ -n ${BIN_DIR:-} ]]; then
  bin=$BIN_DIR
else
  cargo build -q --profile "$PROFILE" -p udptee -p udptee-loadgen --bins
  bin=${CARGO_TARGET_DIR:-target}/$dir
fi
version=$("$bin/udptee" --version | head -1 | awk '{print $2}')
arch=$(dpkg --print-architecture)
out=${OUT:-target/debian}
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

install -D -m 0755 "$bin/udptee" "$stage/usr/bin/udptee"
install -D -m 0755 "$bin/udptee-loadgen" "$stage/usr/bin/udptee-loadgen"
# Stripped, their debug data kept by build id for the dbgsym package.
dbg=$out/dbgsym
rm -rf "$dbg"
for b in udptee udptee-loadgen; do
  f=$stage/usr/bin/$b
  id=$(readelf -n "$f" | sed -n 's/.*Build ID: *//p' | head -1)
  if [[ ${DBGSYM:-1} != 0 && -n $id ]]; then
    install -d "$dbg/usr/lib/debug/.build-id/${id:0:2}"
    objcopy --only-keep-debug --compress-debug-sections "$f" "$dbg/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
    chmod 0644 "$dbg/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
  fi
  objcopy --strip-unneeded --remove-section=.comment --remove-section=.note "$f"
done
# The unit as shipped in dist/, pointed at the packaged binary and docs.
install -d "$stage/lib/systemd/system"
sed -e 's|/usr/local/bin/udptee|/usr/bin/udptee|g' -e 's|/usr/local/share/doc|/usr/share/doc|g' \
  dist/systemd/udptee.service > "$stage/lib/systemd/system/udptee.service"
chmod 0644 "$stage/lib/systemd/system/udptee.service"
install -D -m 0644 dist/udptee.toml "$stage/etc/udptee/udptee.toml"

man=$(mktemp -d)
trap 'rm -rf "$man"' EXIT
"$bin/udptee" manpages "$man" > /dev/null
"$bin/udptee-loadgen" manpages "$man"
install -d "$stage/usr/share/man/man1"
for page in "$man"/*.1; do
  gzip -9n < "$page" > "$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d"
"$bin/udptee" completions bash > "$stage/usr/share/bash-completion/completions/udptee"
"$bin/udptee" completions zsh > "$stage/usr/share/zsh/vendor-completions/_udptee"
"$bin/udptee" completions fish > "$stage/usr/share/fish/vendor_completions.d/udptee.fish"

doc=$stage/usr/share/doc/udptee
install -d "$doc"
install -m 0644 dist/debian/copyright "$doc/copyright"
gzip -9n < README.md > "$doc/README.md.gz"
gzip -9n < docs/operations.md > "$doc/operations.md.gz"
rev=$(git rev-parse --short=12 HEAD 2>/dev/null || echo "a source tree")
{
  echo "udptee ($version) unstable; urgency=medium"
  echo
  echo "  * Built from $rev."
  echo
  echo " -- udptee maintainers <udptee@users.noreply.github.com>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$doc/changelog.gz"
chmod -R u=rwX,go=rX "$stage/usr" "$stage/etc" "$stage/lib"

# Shared-library dependencies, as dpkg-shlibdeps finds them.
shlib=$(mktemp -d)
mkdir -p "$shlib/debian"
printf 'Source: udptee\n\nPackage: udptee\nArchitecture: any\n' > "$shlib/debian/control"
abs=$(cd "$stage" && pwd)
depends=$(cd "$shlib" && dpkg-shlibdeps -O "$abs/usr/bin/udptee" "$abs/usr/bin/udptee-loadgen" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p' || true)
rm -rf "$shlib"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/${depends:-libc6}/" \
  dist/debian/control > "$stage/DEBIAN/control"
echo /etc/udptee/udptee.toml > "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "dist/debian/$s" "$stage/DEBIAN/$s"; done

deb=$out/udptee_${version}_${arch}.deb
dpkg-deb --build --root-owner-group -Zxz "$stage" "$deb" > /dev/null

if [[ -d $dbg/usr ]]; then
  install -d "$dbg/DEBIAN" "$dbg/usr/share/doc"
  ln -s udptee "$dbg/usr/share/doc/udptee-dbgsym"
  ids=$(find "$dbg/usr/lib/debug/.build-id" -name '*.debug' | sed -E 's|.*/([0-9a-f]{2})/([0-9a-f]+)\.debug$|\1\2|' | sort | tr '\n' ' ')
  cat > "$dbg/DEBIAN/control" <<CONTROL
Package: udptee-dbgsym
Source: udptee
Version: $version
Architecture: $arch
Maintainer: udptee maintainers <udptee@users.noreply.github.com>
Installed-Size: $(du -sk --exclude=DEBIAN "$dbg" | cut -f1)
Depends: udptee (= $version)
Section: debug
Priority: optional
Auto-Built-Package: debug-symbols
Build-Ids: ${ids% }
Description: debug symbols for udptee
 Function names and line tables of udptee and udptee-loadgen, by build id,
 for perf, gdb and backtraces.
CONTROL
  dpkg-deb --build --root-owner-group -Zxz "$dbg" "$out/udptee-dbgsym_${version}_${arch}.deb" > /dev/null
fi
echo "$deb"
