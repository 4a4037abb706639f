# Sourced by the compat suites (tests/compat/*.sh): start one `weir serve`
# and wait for its address. Needs `weir` (the binary) and `start_timeout_s`.

# weir_start DIR [SERVE_ARGS...]: starts "$weir" serve listening on
# 127.0.0.1:0 with its data in DIR/data, stdout in DIR/broker.out and stderr
# in DIR/broker.err; sets broker_pid, and bootstrap once it prints its
# address (left empty if it exits, or prints none within start_timeout_s).
weir_start() {
    local dir=$1
    shift
    "$weir" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" \
        >"$dir/broker.out" 2>"$dir/broker.err" &
    broker_pid=$!
    bootstrap=""
    for _ in $(seq 1 $((start_timeout_s * 10))); do
        bootstrap=$(sed -n 's/^listening on //p' "$dir/broker.out" | head -n 1)
        [ -n "$bootstrap" ] && return 0
        kill -0 "$broker_pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

# weir_start_listeners DIR LISTENERS [SERVE_ARGS...]: as weir_start, with
# Kafka's `listeners` instead of --listen; sets secured_pid, and the
# address of each listener NAME in listener_NAME (left empty if none is
# printed within start_timeout_s).
weir_start_listeners() {
    local dir=$1 listeners=$2
    shift 2
    "$weir" serve --set "listeners=$listeners" --data-dir "$dir/data" "$@" \
        >"$dir/broker.out" 2>"$dir/broker.err" &
    secured_pid=$!
    local count
    count=$(tr ',' '\n' <<<"$listeners" | grep -c .)
    for _ in $(seq 1 $((start_timeout_s * 10))); do
        # Every listener prints its own line after the `listening on` one.
        if [ "$(grep -c '^listener ' "$dir/broker.out")" -ge "$count" ]; then
            while read -r _ name _ _ address; do
                printf -v "listener_$name" '%s' "$address"
            done < <(grep '^listener ' "$dir/broker.out")
            return 0
        fi
        kill -0 "$secured_pid" 2>/dev/null || return 0
        sleep 0.1
    done
}
