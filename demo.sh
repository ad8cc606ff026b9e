#!/usr/bin/env bash
# Try bastiond without Azure: build, start the Bastion emulator and the daemon in a
# temporary directory, add a forward, push bytes through it, restart the daemon and
# find the forward back. Then leave it all running until Ctrl-C.
#
#   ./demo.sh                 # local port 2222
#   DEMO_PORT=2223 ./demo.sh
#   DEMO_EXIT=1 ./demo.sh     # stop after the walkthrough instead of waiting
#   DEMO_BIN=/usr/bin ./demo.sh   # bastiond and bastionctl from there (the Debian
#                                 # package); the emulator is still built here
set -euo pipefail
cd "$(dirname "$0")"

port="${DEMO_PORT:-2222}"
connections=20

# Bold headings on a terminal only: no raw escape codes in logs and pipes.
if [[ -t 1 ]]; then
    step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    step() { printf '\n== %s\n' "$*"; }
fi

# Refuse a taken port up front, with the way out.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is already in use; pick another with DEMO_PORT=2223 ./demo.sh" >&2
    exit 1
fi

step "Building release binaries"
# The whole workspace, as the README's other commands do: one build serves all.
cargo build --release --locked --workspace
bin="${DEMO_BIN:-$PWD/target/release}"
emulator="$PWD/target/release/bastion-emulator"
for exe in "$bin/bastiond" "$bin/bastionctl"; do
    [[ -x "$exe" ]] || { echo "$exe is missing or not executable" >&2; exit 1; }
done

demo="$(mktemp -d /tmp/bastiond-demo.XXXXXX)"
export XDG_RUNTIME_DIR="$demo/run" XDG_CONFIG_HOME="$demo/config" XDG_STATE_HOME="$demo/state"
mkdir -p "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME/bastiond" "$XDG_STATE_HOME"
chmod 700 "$XDG_RUNTIME_DIR"
unset BASTIOND_SOCKET

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$demo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then echo "timed out waiting for $what" >&2; exit 1; fi
        sleep 0.1
    done
}

step "Starting the Bastion emulator (Entra, ARM, Bastion data plane over TLS)"
"$emulator" --state-dir "$demo/emulator" 2>"$demo/emulator.log" &
pids+=($!)
wait_until 30 "the emulator" test -s "$demo/emulator/emulator.json"
cat "$demo/emulator/emulator.json"
cp "$demo/emulator/config.toml" "$XDG_CONFIG_HOME/bastiond/config.toml"
# The daemon signs in with the Azure CLI credential; the emulator provides a fake `az`.
export PATH="$demo/emulator/bin:$PATH"

start_daemon() {
    "$bin/bastiond" 2>>"$demo/bastiond.log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    wait_until 30 "bastiond" "$bin/bastionctl" status
}

step "Starting bastiond (logs: $demo/bastiond.log)"
start_daemon
"$bin/bastionctl" status

step "bastionctl forward add 10.1.0.4:22 $port --name demo-ssh"
"$bin/bastionctl" forward add 10.1.0.4:22 "$port" --name demo-ssh

step "Pushing bytes through 127.0.0.1:$port over $connections concurrent connections"
push() {
    local i=$1 reply
    exec {fd}<>"/dev/tcp/127.0.0.1/$port"
    printf 'hello through the bastion %s\n' "$i" >&"$fd"
    IFS= read -r -t 10 reply <&"$fd"
    exec {fd}>&-
    [[ "$reply" == "hello through the bastion $i" ]] || { echo "connection $i: got '$reply'" >&2; return 1; }
}
for i in $(seq 1 "$connections"); do push "$i" & done
failed=0
for job in $(jobs -p); do
    [[ " ${pids[*]} " == *" $job "* ]] && continue
    wait "$job" || failed=$((failed + 1))
done
echo "$((connections - failed))/$connections connections echoed their bytes"
((failed == 0)) || exit 1
"$bin/bastionctl" forward list

step "Restarting the daemon: the forward comes back"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
start_daemon
"$bin/bastionctl" forward list
push again

echo
if [[ -n "${DEMO_EXIT:-}" ]]; then
    echo "Everything works. DEMO_EXIT is set: stopping the demo and removing $demo."
    exit 0
fi
echo "Everything works. The demo environment is still running; from another terminal:"
echo "  export BASTIOND_SOCKET=$XDG_RUNTIME_DIR/bastiond/bastiond.sock"
echo "  $bin/bastionctl forward list"
echo "  $bin/bastionctl forward watch"
echo "Press Ctrl-C to stop it and remove $demo."
wait "$daemon_pid"
