#!/usr/bin/env bash
# The Debian package, end to end: `cargo deb` makes it from the `weir` binary
# the test build already made (no second, release, build), `dpkg -i`
# installs it with systemd not running, and the test checks the weir user,
# /var/lib/weir and the enabled unit; it then runs the broker as the
# installed unit would (its User=, Group=, LimitNOFILE= and ExecStart= read
# from the installed weir.service), waits for GET /ready to answer 200,
# produces and consumes a record with the installed `weir`, stops it with
# SIGTERM (exit 0), removes the package (data and user kept) and purges it
# (both gone). Prints one line per check and a closing
# `package: N passed, M failed`; exits non-zero on any failure. The first
# failure ends the run: each step needs the one before.
#
# Needs root (or sudo) for dpkg, and refuses to run where a weir package,
# user, /etc/weir or /var/lib/weir already exists: its purge would delete
# them. The package is purged on the way out, whatever happened.
#
# WEIR_BIN picks the binary (default: target/debug/weir, which
# `cargo test --workspace --features weir/failpoints` builds, failpoints
# inert unless FAILPOINTS is set; built if missing). Needs cargo-deb
# (scripts/test.sh installs it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
weir=${WEIR_BIN:-$target/debug/weir}
start_timeout_s=30
stop_timeout_s=60
# Bounds each client command, so a broker that never answers fails the check.
client_timeout_s=30

passed=0
failed=0
work=""
stage=""
broker_pid=""
installed=""
started_s=$SECONDS

# Root's commands: dpkg, and the broker started as another user.
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo -n); fi
as_root() { ${sudo[@]+"${sudo[@]}"} "$@"; }

pass() {
    passed=$((passed + 1))
    echo "ok   $1"
}

# fail MESSAGE [FILE]: counts the failure, shows the end of FILE, and ends the run.
fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        tail -n 30 "$2" | sed 's/^/     /'
    fi
    exit 1
}

package_status() {
    dpkg-query -W -f='${db:Status-Status}' weir 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - ERR
    set +e
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        as_root kill -KILL "$broker_pid"
        wait "$broker_pid" 2>/dev/null
    fi
    if [ -n "$installed" ] && [ -n "$(package_status)" ] && [ "$(package_status)" != not-installed ]; then
        echo "     purging the weir package"
        as_root dpkg --purge weir >/dev/null
    fi
    [ -n "$stage" ] && rm -rf "$stage"
    [ -n "$work" ] && as_root rm -rf "$work"
    if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
    fi
    echo "package test took $((SECONDS - started_s)) s"
    echo "package: $passed passed, $failed failed"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "FAIL unexpected error: line $LINENO: $BASH_COMMAND"' ERR

# What the test needs, and what it must not destroy.
if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    fail "the package test needs root or passwordless sudo (dpkg -i, a user of its own)"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    fail "cargo-deb is not installed: cargo install cargo-deb --locked (scripts/test.sh does)"
fi
existing=$(package_status)
if [ -n "$existing" ] && [ "$existing" != not-installed ]; then
    fail "a weir package is already on this machine ($existing); the test would purge it"
fi
for path in /var/lib/weir /etc/weir; do
    if [ -e "$path" ]; then
        fail "$path already exists; the test's purge would delete it"
    fi
done
if getent passwd weir >/dev/null || getent group weir >/dev/null; then
    fail "a user or group weir already exists; the test's purge would delete it"
fi

if [ ! -x "$weir" ]; then
    echo "     building $weir"
    (cd "$root" && cargo build --quiet --bin weir)
fi
work=$(mktemp -d -t weir-package-XXXXXX)
chmod 0755 "$work"

# cargo-deb packages `target/release/weir` (its name for the built binary)
# from the target folder it is given: a folder beside the real one, on the
# same file system, whose release/weir is the test build's binary.
mkdir -p "$target"
stage=$(mktemp -d "$target/package-test-XXXXXX")
mkdir "$stage/release"
ln "$weir" "$stage/release/weir" 2>/dev/null || cp "$weir" "$stage/release/weir"
if ! (cd "$root" && CARGO_TARGET_DIR=$stage cargo deb --no-build --strip --fast \
    --output "$work/" >"$work/cargo-deb.log" 2>&1); then
    fail "cargo deb --no-build" "$work/cargo-deb.log"
fi
deb=$(tail -n 1 "$work/cargo-deb.log")
[ -f "$deb" ] || fail "cargo deb printed no package path" "$work/cargo-deb.log"
pass "cargo deb made $(basename "$deb") ($(du -m "$deb" | cut -f1) MB)"

dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$work/conffiles"
grep -qx /etc/weir/weir.toml "$work/conffiles" ||
    fail "/etc/weir/weir.toml is not a conffile" "$work/conffiles"
pass "/etc/weir/weir.toml is a conffile"

# Install, with systemd not running (no /run/systemd/system here, or not
# as PID 1): the maintainer scripts must not depend on it.
installed=yes
if ! as_root env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1; then
    fail "dpkg -i $(basename "$deb")" "$work/dpkg-i.log"
fi
[ "$(package_status)" = installed ] || fail "dpkg says weir is $(package_status)" "$work/dpkg-i.log"
pass "dpkg -i installs it (systemd running: $([ -d /run/systemd/system ] && echo yes || echo no))"

[ -x /usr/bin/weir ] || fail "/usr/bin/weir is not installed"
/usr/bin/weir --version >"$work/version" 2>&1 || fail "/usr/bin/weir --version" "$work/version"
pass "/usr/bin/weir runs: $(cat "$work/version")"

IFS=: read -r _ _ _ _ _ home shell < <(getent passwd weir) || fail "no user weir"
[ "$home" = /var/lib/weir ] || fail "the user weir's home is $home, not /var/lib/weir"
getent group weir >/dev/null || fail "no group weir"
pass "user and group weir exist (home $home, shell $shell)"

owner=$(stat -c '%U:%G %a' /var/lib/weir 2>&1) || fail "no /var/lib/weir"
[ "$owner" = "weir:weir 750" ] || fail "/var/lib/weir is $owner, not weir:weir 750"
pass "/var/lib/weir is weir:weir, mode 0750"

unit=$(dpkg -L weir | grep '/systemd/system/weir\.service$' || true)
[ -n "$unit" ] && [ -f "$unit" ] || fail "the package installs no weir.service"
wants=/etc/systemd/system/multi-user.target.wants/weir.service
[ -L "$wants" ] || fail "weir.service is not enabled ($wants is missing)"
pass "$unit is installed and enabled"

if command -v systemd-analyze >/dev/null; then
    # It warns about unknown or misspelt keys on stderr but still exits 0.
    if ! systemd-analyze verify "$unit" >"$work/verify.log" 2>&1 || [ -s "$work/verify.log" ]; then
        fail "systemd-analyze verify $unit" "$work/verify.log"
    fi
    pass "systemd-analyze verify finds nothing wrong with the unit"
else
    echo "skip systemd-analyze verify (systemd-analyze is not installed)"
fi

# The unit's command line, user, group, limit and environment.
unit_value() { sed -n "s/^$1=//p" "$unit" | tail -n 1; }
exec_start=$(unit_value ExecStart)
user=$(unit_value User)
group=$(unit_value Group)
nofile=$(unit_value LimitNOFILE)
[ -n "$exec_start" ] && [ -n "$user" ] && [ -n "$group" ] && [ -n "$nofile" ] ||
    fail "weir.service lacks ExecStart=, User=, Group= or LimitNOFILE=" "$unit"
case $exec_start in
    [-@+!:]*) fail "the test does not run ExecStart= prefixes: $exec_start" ;;
esac
read -r -a command <<<"$exec_start"
environment=()
while IFS= read -r assignment; do
    environment+=("$assignment")
done < <(sed -n 's/^Environment=//p' "$unit")

# LimitNOFILE= as systemd sets it (soft and hard), where this machine lets
# root raise the hard limit that far; a container without CAP_SYS_RESOURCE
# does not, and the broker then gets the hard limit it inherits.
limit=(prlimit --nofile="$nofile:$nofile")
if ! as_root "${limit[@]}" true 2>/dev/null; then
    echo "note LimitNOFILE=$nofile cannot be set here; the broker runs with the inherited hard limit, $(ulimit -Hn)"
    limit=()
    nofile=$(ulimit -Hn)
fi

# Free ports (the environment wins over /etc/weir/weir.toml), so the
# test never meets a broker already on the default ones; each bound
# address is read from the broker's stdout.
out=$work/broker.out
err=$work/broker.err
# As systemd runs it: from /, the limit set, then the user's ids and groups.
(
    cd /
    exec ${sudo[@]+"${sudo[@]}"} env ${environment[@]+"${environment[@]}"} \
        WEIR_LISTEN=127.0.0.1:0 WEIR_ADMIN_LISTEN=127.0.0.1:0 \
        ${limit[@]+"${limit[@]}"} \
        setpriv --reuid="$user" --regid="$group" --init-groups -- "${command[@]}"
) >"$out" 2>"$err" &
broker_pid=$!
bootstrap=""
admin=""
deadline=$((SECONDS + start_timeout_s))
while [ -z "$admin" ]; do
    kill -0 "$broker_pid" 2>/dev/null || fail "the broker exited at start" "$err"
    [ "$SECONDS" -lt "$deadline" ] || fail "no listening lines within ${start_timeout_s}s" "$err"
    bootstrap=$(sed -n 's/^listening on //p' "$out" | head -n 1)
    admin=$(sed -n 's/^admin listening on //p' "$out" | head -n 1)
    [ -n "$admin" ] || sleep 0.1
done
pass "the broker runs as $user: $exec_start (Kafka $bootstrap, admin $admin)"

ready=""
deadline=$((SECONDS + start_timeout_s))
while [ "$ready" != 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "GET /ready answered ${ready:-nothing}, not 200, for ${start_timeout_s}s" "$err"
    ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$admin/ready" || true)
    [ "$ready" = 200 ] || sleep 0.1
done
pass "GET http://$admin/ready answers 200"

# The lock file holds the broker's own PID (the one above may be sudo's).
lock_pid=$(as_root cat /var/lib/weir/.lock) || fail "no lock file in /var/lib/weir"
broker_user=$(ps -o user= -p "$lock_pid" | tr -d ' ')
[ "$broker_user" = "$user" ] || fail "the broker (pid $lock_pid) runs as '$broker_user', not $user"
grep -q "limit=$nofile" "$err" || fail "the broker did not log an open files limit of $nofile" "$err"
pass "the broker process is $user's, with RLIMIT_NOFILE $nofile"

client() { timeout "$client_timeout_s" /usr/bin/weir --brokers "$bootstrap" "$@"; }
client topic create package-test --partitions 1 >"$work/client.log" 2>&1 ||
    fail "weir topic create" "$work/client.log"
printf 'k1:hello from the package\n' | client produce package-test --key-separator : \
    >"$work/client.log" 2>&1 || fail "weir produce" "$work/client.log"
consumed=$(client consume package-test --from-beginning -n 1 2>"$work/client.log") ||
    fail "weir consume" "$work/client.log"
[ "$consumed" = "hello from the package" ] || fail "consumed '$consumed'"
pass "a record produced and consumed through the installed broker"

strangers=$(as_root find /var/lib/weir ! -user "$user" | head -n 5)
[ -z "$strangers" ] || fail "files in /var/lib/weir not owned by $user: $strangers"
as_root test -d /var/lib/weir/log || fail "the broker keeps no commit log in /var/lib/weir"
pass "the broker's data is in /var/lib/weir, all of it $user's"

as_root kill -TERM "$broker_pid"
deadline=$((SECONDS + stop_timeout_s))
while kill -0 "$broker_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the broker still runs ${stop_timeout_s}s after SIGTERM" "$err"
    sleep 0.1
done
status=0
wait "$broker_pid" || status=$?
broker_pid=""
[ "$status" -eq 0 ] || fail "the broker exited with $status after SIGTERM" "$err"
grep -q "shut down cleanly" "$err" || fail "the broker did not log its clean shutdown" "$err"
pass "SIGTERM stops it cleanly, exit code 0"

as_root dpkg --remove weir >"$work/dpkg-r.log" 2>&1 || fail "dpkg --remove weir" "$work/dpkg-r.log"
[ ! -e /usr/bin/weir ] || fail "/usr/bin/weir is still there after dpkg --remove"
as_root test -f /var/lib/weir/.lock || fail "dpkg --remove deleted the data in /var/lib/weir"
getent passwd weir >/dev/null || fail "dpkg --remove deleted the user weir"
[ -f /etc/weir/weir.toml ] || fail "dpkg --remove deleted the conffile /etc/weir/weir.toml"
pass "dpkg --remove takes the binary, keeps the data, the user and the config"

as_root dpkg --purge weir >"$work/dpkg-purge.log" 2>&1 || fail "dpkg --purge weir" "$work/dpkg-purge.log"
[ -z "$(package_status)" ] || [ "$(package_status)" = not-installed ] ||
    fail "dpkg says weir is $(package_status) after the purge"
[ ! -e /usr/bin/weir ] || fail "/usr/bin/weir is still there after the purge"
for path in /var/lib/weir /etc/weir "$wants"; do
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path is still there after the purge" "$work/dpkg-purge.log"
done
if getent passwd weir >/dev/null || getent group weir >/dev/null; then
    fail "the user or group weir is still there after the purge" "$work/dpkg-purge.log"
fi
pass "dpkg --purge takes the binary, data, config, unit link, user and group"
