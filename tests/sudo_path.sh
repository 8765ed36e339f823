#!/usr/bin/env bash
# The least-privilege path, end to end, with the shipped files: the package's postinst creates
# the user and the addon directory, the shipped sudoers file is the only sudo rule, the mounts,
# capability bounding set and umask of the service unit are reproduced (the last two read from
# the unit), and the binary runs as that user. Its reload really applies the ruleset, through
# sudo, in this test's own network namespace.
#
# Run by tests/packaging.rs as root:
#   unshare --mount --net --pid --fork --mount-proc --propagation private \
#       bash tests/sudo_path.sh BINARY REPO
# Everything it changes is private to those namespaces: /etc is a copy on a tmpfs (so the user
# it creates never exists on the host), /run, /tmp and /var/lib are fresh tmpfs mounts, and the
# ruleset lives in the new network namespace. As PID 1 of the new PID namespace, its exit kills
# every process it started (the TCP listener), and the namespaces disappear with them.
set -euo pipefail

BIN=$1
REPO=$2
SVC_USER=nftables-failover
PORT=8443
# Every child is bounded; the whole script is bounded again by the Rust test.
T=(timeout --kill-after=5 30)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { echo "--- $*" >&2; }

# Mounting over /etc, /run and /var/lib must never happen in the host's namespaces.
[ "$$" = 1 ] || fail "must run as PID 1 of a new PID and mount namespace (see tests/packaging.rs)"
[ "$(id -u)" = 0 ] || fail "must run as root"

step "private namespace: loopback, /tmp, /etc copy, /run, /var/lib"
"${T[@]}" ip link set lo up
# The repository (and so the binary) may live under /tmp, which is replaced below: first copy
# what this script uses onto a tmpfs of this namespace's own.
mount -t tmpfs -o mode=0755 tmpfs /mnt
install -m 0755 "$BIN" /mnt/nftables-failover
mkdir /mnt/repo
cp -a "$REPO/sudoers.d" "$REPO/debian" "$REPO/etc" "$REPO/systemd" /mnt/repo/
BIN=/mnt/nftables-failover
REPO=/mnt/repo
mount -t tmpfs -o mode=1777 tmpfs /tmp
W=/tmp/work
mkdir -m 0755 "$W"
cp -a /etc "$W/etc"
mount --bind "$W/etc" /etc
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir -p /var/lib/dpkg
# postinst consults dpkg-statoverride; give it the host's overrides, read-only copy.
cp /var/lib/dpkg/statoverride /var/lib/dpkg/ 2>/dev/null || : >/var/lib/dpkg/statoverride
# The binary must be executable by the service user; target/ may not be traversable for it.
install -m 0755 "$BIN" "$W/nftables-failover"

# The unit's process settings, read from the shipped unit so this test cannot drift from it.
UNIT=$REPO/systemd/nftables-failover.service
# The value of a setting that must appear exactly once in the unit.
unit_setting() {
    local values
    values=$(sed -n "s/^$1=//p" "$UNIT")
    [ -n "$values" ] && [ "$(printf '%s\n' "$values" | wc -l)" = 1 ] ||
        fail "expected exactly one non-empty $1= in $UNIT, found: ${values:-none}"
    printf '%s\n' "$values"
}
# CapabilityBoundingSet=CAP_A CAP_B … becomes setpriv's "-all,+a,+b,…". An inverted (~) list
# would mean something else entirely; refuse it rather than reproduce it wrongly.
caps=$(unit_setting CapabilityBoundingSet)
case $caps in *"~"*) fail "CapabilityBoundingSet=$caps: an inverted list is not reproduced here" ;; esac
BSET=-all
for cap in $caps; do
    [[ $cap =~ ^CAP_[A-Z_]+$ ]] || fail "CapabilityBoundingSet=: unexpected entry '$cap'"
    name=${cap#CAP_}
    BSET+=",+${name,,}"
done
UMASK=$(unit_setting UMask)
[[ $UMASK =~ ^0[0-7]{3}$ ]] || fail "UMask=$UMASK: expected four octal digits"
# ProtectProc= and ProcSubset= become the hidepid= and subset= options of the unit's /proc.
PROC_OPTS=hidepid=$(unit_setting ProtectProc),subset=$(unit_setting ProcSubset)
step "the unit's bounding set: $BSET; umask $UMASK; /proc $PROC_OPTS"

step "install as the package does: sudoers file (the only sudo rule), postinst, configs"
find /etc/sudoers.d -mindepth 1 -delete
install -o root -g root -m 0440 "$REPO/sudoers.d/nftables-failover" /etc/sudoers.d/
"${T[@]}" visudo -c >/dev/null || fail "sudoers with the shipped file does not parse"
# The sudoers rules name the real user, so the real postinst creates it (in the /etc copy).
getent passwd "$SVC_USER" >/dev/null && fail "$SVC_USER already exists in the copied /etc"
"${T[@]}" sh "$REPO/debian/postinst" configure
getent passwd "$SVC_USER" >/dev/null || fail "postinst did not create user $SVC_USER"
[ "$(stat -c '%U:%G %a' /etc/nftables.d/addons)" = "root:$SVC_USER 2775" ] ||
    fail "postinst made /etc/nftables.d/addons $(stat -c '%U:%G %a' /etc/nftables.d/addons), expected root:$SVC_USER 2775"
"${T[@]}" sh "$REPO/debian/postinst" configure || fail "postinst is not idempotent"
# An upgrade from the Python addon, which wrote its include as root, 0640: postinst hands it
# the service's group, so the service can read the include it replaces.
printf 'define endpoint_filer_v4 = 127.0.0.1\n' >/etc/nftables.d/addons/failover.nft
chown root:root /etc/nftables.d/addons/failover.nft
chmod 0640 /etc/nftables.d/addons/failover.nft
"${T[@]}" sh "$REPO/debian/postinst" configure
[ "$(stat -c '%U:%G %a' /etc/nftables.d/addons/failover.nft)" = "root:$SVC_USER 640" ] ||
    fail "postinst left the Python addon's include $(stat -c '%U:%G %a' /etc/nftables.d/addons/failover.nft), expected root:$SVC_USER 640"
rm /etc/nftables.d/addons/failover.nft
# Monitoring (README, "Status"): a reader with the documented sudoers line, and a stranger.
useradd --system --no-create-home --shell /usr/sbin/nologin monitor
useradd --system --no-create-home --shell /usr/sbin/nologin stranger
printf '%s\n' "monitor ALL = (nftables-failover) NOPASSWD: $W/nftables-failover status --json" \
    >/etc/sudoers.d/monitoring
chmod 0440 /etc/sudoers.d/monitoring
"${T[@]}" visudo -c >/dev/null || fail "sudoers with the monitoring line does not parse"

# The shipped example main config, unchanged: it includes /etc/nftables.d/addons/*.nft and uses
# $endpoint_filer_v4, $endpoint_filer_v6, $endpoint_print_v4 and $mark_proxy_v4.
install -m 0644 "$REPO/etc/nftables.conf" /etc/nftables.conf
cat >/etc/nftables.d/addons/failover.json <<EOF
{
  "failover": {
    "endpoint_filer": {"ip4": ["127.0.0.1", "127.0.0.2"], "ip6": ["::1"], "port": $PORT},
    "endpoint_print": {"ip4": ["127.0.0.2"], "port": $PORT},
    "mark_proxy": {"ip4": ["127.0.0.3", "127.0.0.2"], "port": $PORT, "values": [200, 201]}
  },
  "settings": {"timeout_ms": 1000}
}
EOF
chmod 0644 /etc/nftables.d/addons/failover.json

# "systemctl reload nftables.service" must really load /etc/nftables.conf, in this namespace;
# "is-active" and "start" play a unit whose state is kept in /run/test-unit/state.
mkdir -m 0755 /run/test-unit
echo active >/run/test-unit/state
cat >"$W/systemctl" <<'EOF'
#!/bin/sh
[ "$(id -u)" = 0 ] || { echo "test systemctl: not root" >&2; exit 1; }
state=$(cat /run/test-unit/state)
case "$*" in
"reload nftables.service")
    [ "$state" = active ] || { echo "nftables.service is not active, cannot reload." >&2; exit 1; }
    exec /usr/sbin/nft -f /etc/nftables.conf ;;
"is-active nftables.service")
    echo "$state"; [ "$state" = active ] || exit 3 ;;
"start nftables.service")
    /usr/sbin/nft -f /etc/nftables.conf && echo active >/run/test-unit/state ;;
*) echo "test systemctl: unexpected arguments: $*" >&2; exit 1 ;;
esac
EOF
chmod 0755 "$W/systemctl"
[ -x /usr/bin/systemctl ] || fail "/usr/bin/systemctl is missing (install systemd); the sudoers rule names it"
mount --bind "$W/systemctl" /usr/bin/systemctl

step "the unit's sandbox: ProtectSystem=strict, ProtectHome, ProtectProc, Runtime/StateDirectory"
# RuntimeDirectory=nftables-failover, RuntimeDirectoryMode=0700; StateDirectory, mode 0750.
install -d -o "$SVC_USER" -g "$SVC_USER" -m 0700 /run/nftables-failover
install -d -o "$SVC_USER" -g "$SVC_USER" -m 0750 /var/lib/nftables-failover
# ReadWritePaths= and the directories stay writable: bind them onto themselves first, so the
# read-only remounts below do not reach them.
for rw in /etc/nftables.d/addons /run/nftables-failover /var/lib/nftables-failover /run/test-unit; do
    mount --bind "$rw" "$rw"
done
# ProtectHome=yes: inaccessible.
for home in /home /root; do
    if [ -d "$home" ]; then
        mount -t tmpfs -o ro,mode=000 tmpfs "$home"
    fi
done
# ProtectSystem=strict: everything else read-only (bind remounts change only this
# namespace's mounts, never the file system). /run/sudo stays read-only on purpose: the unit
# does not make it writable, so sudo must work without writing there.
for ro in / /etc /run /var/lib /usr/bin/systemctl; do
    mount -o remount,bind,ro "$ro"
done
# ProtectProc=/ProcSubset=: systemd gives the unit its own /proc instance with these options.
mount -t proc -o "$PROC_OPTS" proc /proc
[ -e /proc/sys ] && fail "/proc/sys is visible; ProcSubset= is not reproduced"
touch /etc/nftables.d/probe 2>/dev/null && fail "/etc/nftables.d is writable; the sandbox is not in place"
touch /run/sudo-probe 2>/dev/null && fail "/run is writable; the sandbox is not in place"

step "a TCP listener on 127.0.0.2:$PORT only"
python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.2", int(sys.argv[1])))
s.listen(64)
while True:
    s.accept()[0].close()
' "$PORT" &
"${T[@]}" bash -c "until (exec 3<>/dev/tcp/127.0.0.2/$PORT) 2>/dev/null; do sleep 0.05; done" ||
    fail "the listener did not come up"

# Runs a command as the service user, as systemd would: the unit's capability bounding set
# (inherited by sudo and by the nft it runs as root) and umask, no supplementary groups but its
# own, a clean environment with RUNTIME_DIRECTORY. Output goes to $W/out and $W/err.
as_user() {
    local rc=0
    (
        umask "$UMASK"
        exec "${T[@]}" setpriv --bounding-set "$BSET" \
            --reuid="$SVC_USER" --regid="$SVC_USER" --init-groups "${PRIV[@]}" \
            env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin RUNTIME_DIRECTORY=/run/nftables-failover \
            "$@"
    ) >"$W/out" 2>"$W/err" || rc=$?
    return $rc
}
PRIV=()
show() { sed 's/^/    /' "$W/err" "$W/out" >&2; }

# The reproduction itself: a process started like the service has exactly the unit's bounding set.
as_user setpriv -d || { show; fail "setpriv -d as $SVC_USER failed"; }
got=$(sed -n 's/^Capability bounding set: //p' "$W/out" | tr ',' '\n' | sort)
want=$(tr ',' '\n' <<<"${BSET#-all,}" | tr -d + | sort)
[ -n "$want" ] && [ "$got" = "$want" ] || { show; fail "bounding set is '$got', expected '$want'"; }

step "run as $SVC_USER: checks, staged check, write, main check and reload via sudo"
rc=0
as_user "$W/nftables-failover" -v || rc=$?
show
[ $rc = 0 ] || fail "the run as $SVC_USER exited $rc, expected 0"
grep -q "running: .*sudo -n /usr/sbin/nft -c -f /run/nftables-failover/main.nft" "$W/err" ||
    fail "the staged check did not go through sudo with the fixed path"
grep -q "running: .*sudo -n /usr/bin/systemctl reload nftables.service" "$W/err" ||
    fail "the reload did not go through sudo"
grep -q "applied and nftables reloaded" "$W/err" || fail "no 'applied' log line"
for define in "endpoint_filer_v4 = 127.0.0.2" "endpoint_print_v4 = 127.0.0.2" "mark_proxy_v4 = 201"; do
    grep -qx "define $define" /etc/nftables.d/addons/failover.nft ||
        fail "the include lacks 'define $define'"
done
[ "$(stat -c '%U %a' /etc/nftables.d/addons/failover.nft)" = "$SVC_USER 640" ] ||
    fail "include is $(stat -c '%U %a' /etc/nftables.d/addons/failover.nft), expected $SVC_USER 640"
# The lock is 0660 with the addon directory's group whatever the umask, so root and service
# runs share it and nobody else can hold it.
[ "$(stat -c '%a %G' /etc/nftables.d/addons/.failover.nft.lock)" = "660 $SVC_USER" ] ||
    fail "lock file is $(stat -c '%a %G' /etc/nftables.d/addons/.failover.nft.lock), expected 660 $SVC_USER"
# The unit's UMask= is reproduced for everything the service user starts.
as_user sh -c umask || fail "umask as $SVC_USER failed"
[ "$(cat "$W/out")" = "$UMASK" ] || fail "umask as $SVC_USER is $(cat "$W/out"), expected $UMASK"
ruleset=$("${T[@]}" nft list ruleset)
echo "$ruleset" | grep -q "ip daddr 127.0.0.2 tcp dport 443 accept" ||
    fail "the reload did not apply the selected address; ruleset:
$ruleset"
echo "$ruleset" | grep -q "meta mark set 0x000000c9" ||
    fail "the reload did not apply the selected mark value 201; ruleset:
$ruleset"

[ "$(stat -c %U /var/lib/nftables-failover/state.json 2>/dev/null)" = "$SVC_USER" ] ||
    fail "the state file was not written to the StateDirectory by $SVC_USER"
grep -q "ignoring the state file\|cannot save state" "$W/err" && { show; fail "state trouble in the first run"; }

step "second run: unchanged, no sudo at all"
as_user "$W/nftables-failover" -v || { show; fail "the unchanged run failed"; }
grep -q "unchanged" "$W/err" || { show; fail "second run did not report 'unchanged'"; }
grep -q "sudo" "$W/err" && { show; fail "an unchanged run must not run sudo"; }

step "monitoring: status --json as the service user through one sudoers line, not otherwise"
# Runs "$2..." as user $1, like a monitoring agent would, without the service's sandbox.
as_other() {
    local who=$1 rc=0
    shift
    (exec "${T[@]}" setpriv --reuid="$who" --regid="$who" --init-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@") >"$W/out" 2>"$W/err" || rc=$?
    return $rc
}
# Its exit code is the Nagios status (1: some define failed over here), not a failure.
rc=0; as_other monitor sudo -n -u "$SVC_USER" "$W/nftables-failover" status --json || rc=$?
[ $rc -le 2 ] && grep -q '"exit_code": '"$rc" "$W/out" || { show; fail "the reader did not get the status (exit $rc)"; }
as_other monitor "$W/nftables-failover" status --json && { show; fail "status without sudo should not read the config"; }
grep -q "Permission denied" "$W/out" || { show; fail "the reader's direct status did not say why"; }
as_other monitor sudo -n -u "$SVC_USER" "$W/nftables-failover" status --check && { show; fail "the reader may run only status --json"; }
as_other stranger sudo -n -u "$SVC_USER" "$W/nftables-failover" status --json && { show; fail "a stranger ran status"; }
rc=0; as_user "$W/nftables-failover" status --json || rc=$?
[ $rc -le 2 ] && grep -q '"exit_code": '"$rc" "$W/out" || { show; fail "the service user's own status failed (exit $rc)"; }
as_other monitor touch /etc/nftables.d/addons/probe && fail "the reader can write the addon directory"

step "nftables.service failed (no include at boot): the run asks its state and starts it"
rm /etc/nftables.d/addons/failover.nft
"${T[@]}" nft flush ruleset
echo failed >/run/test-unit/state
as_user "$W/nftables-failover" -v || { show; fail "the run with a failed nftables.service exited non-zero"; }
for line in "/usr/bin/systemctl reload nftables.service" "/usr/bin/systemctl is-active nftables.service" "/usr/bin/systemctl start nftables.service"; do
    grep -q "running: .*sudo -n $line\$" "$W/err" || { show; fail "no 'sudo -n $line'"; }
done
grep -q "nftables.service started: it had failed" "$W/err" || { show; fail "no 'started' log line"; }
[ "$(cat /run/test-unit/state)" = active ] || fail "nftables.service was not started"
# Not `nft list ruleset | grep -q`: with pipefail, nft's SIGPIPE after grep's early exit fails it.
ruleset=$("${T[@]}" nft list ruleset)
grep -q "ip daddr 127.0.0.2 tcp dport 443 accept" <<<"$ruleset" || fail "the start did not load the ruleset:
$ruleset"

step "nftables.service inactive (not in use): never started, the include installed"
rm /etc/nftables.d/addons/failover.nft
echo inactive >/run/test-unit/state
as_user "$W/nftables-failover" -v || { show; fail "the run with an inactive nftables.service exited non-zero"; }
grep -q "running: .*sudo -n /usr/bin/systemctl is-active nftables.service" "$W/err" || { show; fail "no is-active query"; }
grep -q "systemctl start" "$W/err" && { show; fail "an inactive nftables.service was started"; }
grep -q "installed, not loaded: nftables.service is inactive" "$W/err" || { show; fail "no 'not loaded' log line"; }
[ -e /etc/nftables.d/addons/failover.nft ] || fail "the include was not installed"
echo active >/run/test-unit/state

step "live mode: a hand-flushed set is restored through sudo with the fixed live.json lines"
cp /etc/nftables.d/addons/failover.json "$W/failover.json.reload"
sed -i 's/"timeout_ms": 1000}/"timeout_ms": 1000, "apply": "live"}/' /etc/nftables.d/addons/failover.json
grep -q '"apply": "live"' /etc/nftables.d/addons/failover.json || fail "could not switch the config to live mode"
# The include gains the table's declaration: not a value change, so this one reloads.
as_user "$W/nftables-failover" -v || { show; fail "the run that switches to live mode failed"; }
live_set=$("${T[@]}" nft list set inet nftables_failover endpoint_filer_v4)
echo "$live_set" | grep -q "elements = { 127.0.0.2 }" || { show; fail "the reload did not load the live set: $live_set"; }
"${T[@]}" nft flush set inet nftables_failover endpoint_filer_v4
as_user "$W/nftables-failover" -v || { show; fail "the run that restores the live set failed"; }
for line in "/usr/sbin/nft -c -j -f /run/nftables-failover/live.json" "/usr/sbin/nft -j -f /run/nftables-failover/live.json"; do
    grep -q "running: .*sudo -n $line\$" "$W/err" || { show; fail "no 'sudo -n $line'"; }
done
grep -q "restored" "$W/err" || { show; fail "no 'restored' log line"; }
grep -q "systemctl" "$W/err" && { show; fail "restoring a live set must not reload"; }
live_set=$("${T[@]}" nft list set inet nftables_failover endpoint_filer_v4)
echo "$live_set" | grep -q "elements = { 127.0.0.2 }" || { show; fail "the live set was not restored: $live_set"; }
cp "$W/failover.json.reload" /etc/nftables.d/addons/failover.json
as_user "$W/nftables-failover" || { show; fail "the run back to reload mode failed"; }

step "sudo allows the user exactly the listed command lines"
as_user sudo -n /usr/sbin/nft -c -f /etc/nftables.conf || { show; fail "positive control: the allowed check was refused"; }
# Not a word from sudo either: e.g. without CAP_AUDIT_WRITE in the bounding set it still runs the
# command but warns "unable to send audit message", and the audit record is lost.
[ -s "$W/err" ] && { show; fail "the allowed sudo command printed warnings"; }
refused() {
    if as_user sudo -n "$@"; then
        show
        fail "sudo allowed $SVC_USER to run: $*"
    fi
    grep -Eq "^sudo: (a password is required|sorry, user .* is not allowed to execute)" "$W/err" || {
        show
        fail "'$*' failed, but not because sudo refused it"
    }
    grep -q "Error:" "$W/err" && fail "nft ran for: $*"
    return 0
}
refused /usr/sbin/nft list ruleset
refused /usr/sbin/nft -c -f /etc/shadow
refused /usr/sbin/nft -cf /etc/nftables.conf
refused /usr/sbin/nft -c -f /etc/nftables.conf -f /etc/shadow
refused /usr/sbin/nft -f /etc/nftables.conf
refused /usr/sbin/nft -j -f /etc/nftables.conf
refused /usr/sbin/nft -j -f /run/nftables-failover/main.nft
refused /usr/sbin/nft -j -f /run/nftables-failover/live.json -f /etc/shadow
refused /usr/sbin/nft -c -j -f /run/nftables-failover/main.nft
refused /usr/sbin/nft -j -c -f /run/nftables-failover/live.json
refused /usr/bin/systemctl restart nftables.service
refused /usr/bin/systemctl stop nftables.service
refused /usr/bin/systemctl start sshd.service
refused /usr/bin/systemctl is-active sshd.service
refused /bin/sh -c id

step "NoNewPrivileges (implied by RestrictAddressFamilies= etc.) would break sudo"
PRIV=(--no-new-privs)
if as_user sudo -n /usr/sbin/nft -c -f /etc/nftables.conf; then
    fail "sudo worked under no_new_privs; the unit comments claim otherwise"
fi
grep -q "no new privileges" "$W/err" || { show; fail "unexpected sudo failure under no_new_privs"; }
PRIV=()

step "without the sudoers rule: exit 1, 'hint: sudo refused', nothing installed"
rm /etc/nftables.d/addons/failover.nft
mount -t tmpfs -o ro,mode=0755 tmpfs /etc/sudoers.d
rc=0
as_user "$W/nftables-failover" || rc=$?
show
[ $rc = 1 ] || fail "the run without sudo rules exited $rc, expected 1"
grep -q "hint: sudo refused" "$W/err" || fail "no 'hint: sudo refused' in the error"
[ -e /etc/nftables.d/addons/failover.nft ] && fail "the include was installed although its check was refused"
umount /etc/sudoers.d

step "postrm purge: user, group and state removed, leftovers (not link targets) handed to root"
for rw in / /etc /run /var/lib; do
    mount -o remount,bind,rw "$rw"
done
umount /var/lib/nftables-failover
# The service user can plant symlinks in the addons directory: purge must re-own the links, not
# what they point to (a root:shadow file like /etc/shadow, another user's file), also below a
# subdirectory the user made.
install -o root -g shadow -m 0640 /dev/null /etc/victim-shadow
install -o nobody -g nogroup -m 0600 /dev/null /etc/victim-nobody
as_user ln -s /etc/victim-shadow /etc/nftables.d/addons/shadow.nft || { show; fail "cannot plant a symlink as $SVC_USER"; }
as_user mkdir /etc/nftables.d/addons/sub || { show; fail "cannot make a directory as $SVC_USER"; }
as_user ln -s /etc/victim-nobody /etc/nftables.d/addons/sub/nobody || { show; fail "cannot plant a symlink as $SVC_USER"; }
[ "$(stat -c %U /etc/nftables.d/addons/shadow.nft)" = "$SVC_USER" ] || fail "the planted link is not $SVC_USER's"
[ -e /etc/nftables.d/addons/.failover.nft.applied ] || as_user touch /etc/nftables.d/addons/.failover.nft.applied
"${T[@]}" sh "$REPO/debian/postrm" purge
for victim in "/etc/victim-shadow root:shadow 640" "/etc/victim-nobody nobody:nogroup 600"; do
    read -r path owner mode <<<"$victim"
    [ "$(stat -c '%U:%G %a' "$path")" = "$owner $mode" ] ||
        fail "postrm purge followed a planted symlink: $path is now $(stat -c '%U:%G %a' "$path"), was $owner $mode"
done
for link in shadow.nft sub/nobody; do
    [ "$(stat -c %U:%G "/etc/nftables.d/addons/$link")" = root:root ] ||
        fail "postrm purge did not hand the link $link to root: $(stat -c %U:%G "/etc/nftables.d/addons/$link")"
done
for own in .failover.nft.lock .failover.nft.applied; do
    [ -e "/etc/nftables.d/addons/$own" ] && fail "postrm purge left $own"
done
getent passwd "$SVC_USER" >/dev/null && fail "postrm purge left user $SVC_USER"
getent group "$SVC_USER" >/dev/null && fail "postrm purge left group $SVC_USER"
[ -e /var/lib/nftables-failover ] && fail "postrm purge left /var/lib/nftables-failover"
[ -e /etc/nftables.d/addons/failover.json ] || fail "postrm purge removed the admin's config"
leftover=$(find /etc/nftables.d/addons -nouser -o -nogroup)
[ -z "$leftover" ] || fail "files with a dangling owner after purge: $leftover"

echo "sudo_path: ALL OK"
