#!/bin/sh
# containerd.sh start|stop DIR — a containerd of its own for CI, with its
# config, root, state and socket under DIR (keep DIR short: the socket path
# DIR/c.sock must stay under 108 bytes). `start` prints the socket path and
# returns once containerd serves; `stop` removes what runs in it, stops it,
# ends its shims and removes DIR.
set -eu

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
sock=$dir/c.sock
bin=${CONTAINERD:-/usr/bin/containerd}
ctr=${CTR:-/usr/bin/ctr}

case $cmd in
start)
	[ "$(id -u)" = 0 ] || { echo "containerd.sh: containerd needs root" >&2; exit 1; }
	[ -x "$bin" ] || { echo "containerd.sh: $bin not found" >&2; exit 1; }
	[ ${#sock} -lt 100 ] || { echo "containerd.sh: socket path $sock is too long for a unix socket" >&2; exit 1; }
	mkdir -p "$dir"
	cat >"$dir/config.toml" <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
CONF
	setsid "$bin" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
	echo $! >"$dir/containerd.pid"
	i=0
	until "$ctr" -a "$sock" version >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -ge 300 ] || ! kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
			echo "containerd.sh: containerd did not start; log:" >&2
			tail -n 40 "$dir/containerd.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "$sock"
	;;
stop)
	[ -d "$dir" ] || exit 0
	if "$ctr" -a "$sock" version >/dev/null 2>&1; then
		for ns in $("$ctr" -a "$sock" ns ls -q); do
			for c in $("$ctr" -a "$sock" -n "$ns" c ls -q); do
				"$ctr" -a "$sock" -n "$ns" t kill -s SIGKILL "$c" >/dev/null 2>&1 || true
				"$ctr" -a "$sock" -n "$ns" t rm -f "$c" >/dev/null 2>&1 || true
				"$ctr" -a "$sock" -n "$ns" c rm "$c" >/dev/null 2>&1 || true
			done
		done
	fi
	if [ -f "$dir/containerd.pid" ]; then
		pid=$(cat "$dir/containerd.pid")
		kill "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	# Shims outlive containerd; each names our socket in its arguments.
	for p in /proc/[0-9]*; do
		if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "containerd-shim.* -address $sock "; then
			kill -9 "${p#/proc/}" 2>/dev/null || true
		fi
	done
	grep -o " $dir/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$dir"
	;;
*)
	usage
	;;
esac
