#!/usr/bin/env bash
# The baseline supervisor of the benchmark: bash starts N copies of PROGRAM and revives
# each one as soon as `wait -n -p` reports it gone. SIGTERM stops them all.
# Usage: bash-loop.sh N PROGRAM
n=$1
program=$2
declare -A children # pid -> slot
stop() {
    kill -TERM "${!children[@]}" 2>/dev/null
    wait
    exit 0
}
trap stop TERM INT
for ((slot = 0; slot < n; slot++)); do
    "$program" &
    children[$!]=$slot
done
while :; do
    dead=
    wait -n -p dead
    [[ -n $dead && -n ${children[$dead]:-} ]] || continue
    slot=${children[$dead]}
    unset "children[$dead]"
    "$program" &
    children[$!]=$slot
done
