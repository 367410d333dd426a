# Shared by the measuring scripts (sourced, not run): build the release binaries, a temporary
# folder removed at exit with every background job, and helpers.
cargo build --release --workspace -q
T=target/release
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
# A free loopback UDP port.
port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A /proc/PID/status field in KiB: kib VmRSS PID.
kib() { awk -v k="$1" '$1==k":" {print $2}' "/proc/$2/status"; }
