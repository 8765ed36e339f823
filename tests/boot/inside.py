#!/usr/bin/python3
"""Runs inside the container booted by tests/boot.rs, as root, with systemd as PID 1.

Installs the package, follows the README's Install section, and checks failover, failback,
the journal, the sandbox, the sudo rules, the nftables.service override and the package life
cycle. Prints one "ok ..." line per check with what it observed, and ends with
"boot: ALL OK"; the first failed check raises and ends the run with a traceback.

Also the probe: with the argument "probe" it runs as the ExecStart of nftables-failover.service
(through a drop-in that changes nothing else), so it sees exactly the service's sandbox, user and
sudo context, and writes what it observed to $STATE_DIRECTORY/probe.json.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

TEST = "/mnt/test"  # bound read-only by tests/boot.rs: the .deb and this directory
ADDONS = "/etc/nftables.d/addons"
CONFIG = f"{ADDONS}/failover.json"
INCLUDE = f"{ADDONS}/failover.nft"
STATE = "/var/lib/nftables-failover"
UNIT = "nftables-failover.service"
TIMER = "nftables-failover.timer"
USER = "nftables-failover"
DOC = "/usr/share/doc/nftables-failover"
# Loopback candidates of the test variable; 127.0.0.99:9 is dropped by the test ruleset, so a
# check of it hangs until its timeout (keeps a run alive to inspect it).
PRIMARY, BACKUP, BLACKHOLE, PORT = "127.0.0.1", "127.0.0.2", "127.0.0.99", 8080
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def ok(check, observed):
    log(f"ok {check}: {observed}")


def fail(msg):
    raise AssertionError(msg)


def sh(*args, check=True, timeout=60, **kw):
    """Runs a command; returns CompletedProcess with text output."""
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        fail(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def out(*args, **kw):
    return sh(*args, **kw).stdout.strip()


def wait_for(what, cond, limit, step=0.1):
    """Polls cond() until it returns a true value; returns (value, seconds taken)."""
    start = time.monotonic()
    while True:
        v = cond()
        if v:
            return v, time.monotonic() - start
        if time.monotonic() - start > limit:
            fail(f"timed out after {limit:.1f}s waiting for {what}")
        time.sleep(step)


def show(unit, prop):
    return out("systemctl", "show", unit, "-p", prop, "--value")


def write(path, text, mode=None, group=None):
    with open(path, "w") as f:
        f.write(text)
    if group:
        shutil.chown(path, group=group)
    if mode is not None:
        os.chmod(path, mode)


def read(path):
    with open(path) as f:
        return f.read()


def unit_directives(path):
    """(section, key, value) of a unit file, in order, comments and blank lines skipped."""
    section, result = None, []
    for line in read(path).replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        result.append((section, key.strip(), value.strip()))
    return result


def size(text):
    """A systemd size ("256M") in bytes."""
    unit = text[-1] if text[-1] in "KMGT" else ""
    return int(text.rstrip("KMGT")) * 1024 ** ("KMGT".index(unit) + 1 if unit else 0)


def seconds(span):
    """A systemd time span as the units use it ("5s", "1min", "500ms")."""
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)\s*([a-z]*)", span):
        total += float(num) * {"": 1, "s": 1, "sec": 1, "ms": 0.001, "min": 60, "m": 60}[unit]
    return total


class Listener:
    """python3 -m http.server on one loopback address, like the README's quick start."""

    def __init__(self, addr):
        self.addr = addr
        self.proc = subprocess.Popen(
            ["python3", "-m", "http.server", str(PORT), "--bind", addr],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(f"listener on {addr}:{PORT}", self._connects, 10)

    def _connects(self):
        try:
            socket.create_connection((self.addr, PORT), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def ruleset_target():
    """Which candidate the loaded ruleset's test rule points at."""
    m = re.search(r"ip daddr (\S+) tcp dport 8080", out("nft", "list", "ruleset"))
    return m and m.group(1)


def journal(cursor, *match):
    """Journal entries since cursor, as dicts: those logged by the service's processes, or
    what match selects."""
    lines = out("journalctl", "--no-pager", "-o", "json", f"--after-cursor={cursor}",
                *(match or [f"_SYSTEMD_UNIT={UNIT}"])).splitlines()
    return [json.loads(l) for l in lines if l.strip()]


def cursor():
    text = out("journalctl", "--no-pager", "-n", "0", "--show-cursor")
    return text.rsplit("-- cursor: ", 1)[1].strip()


def message(e):
    m = e.get("MESSAGE", "")
    return bytes(m).decode(errors="replace") if isinstance(m, list) else m


def unchanged_after(c):
    """Runs since cursor c that found nothing to change."""
    lines = out("journalctl", "--no-pager", "-o", "cat", f"--after-cursor={c}", "-u", UNIT)
    return lines.count(f"{INCLUDE}: unchanged")


def config(extra=None):
    variables = {"web": {"ip4": [PRIMARY, BACKUP], "port": PORT}}
    if extra:
        variables.update(extra)
    return json.dumps({"failover": variables}, indent=2) + "\n"


NFTABLES_CONF = f"""#!/usr/sbin/nft -f
flush ruleset

include "/etc/nftables.d/addons/*.nft"

table inet boot_test {{
	chain output {{
		type filter hook output priority filter; policy accept;
		# Makes {BLACKHOLE}:9 a candidate that never answers.
		ip daddr {BLACKHOLE} tcp dport 9 drop
		ip daddr $web_v4 tcp dport 8080 counter accept
	}}
}}
"""


# --- Install, following the README ------------------------------------------------------------

def install():
    deb = glob.glob(f"{TEST}/deb/*.deb")
    if len(deb) != 1:
        fail(f"expected one .deb in {TEST}/deb, found {deb}")
    # README: "apt install ./target/debian/nftables-failover_*.deb". No package lists here
    # (private network): the dependencies are installed, so apt needs none.
    p = sh("apt-get", "install", "-y", "-q", deb[0], timeout=120)
    ok("install: apt install ./nftables-failover_*.deb", f"{os.path.basename(deb[0])}, " +
       (re.search(r"\d+ newly installed", p.stdout) or ["?"])[0])
    pw = out("getent", "passwd", USER).split(":")
    ok("install: system user", f"{USER} uid {pw[2]}, home {pw[5]}, shell {pw[6]}")
    st = os.stat(ADDONS)
    mode = f"{st.st_mode & 0o7777:o}"
    grp = out("stat", "-c", "%U:%G", ADDONS)
    if (mode, grp) != ("2775", f"root:{USER}"):
        fail(f"{ADDONS} is {grp} {mode}, README says group {USER}, mode 2775")
    ok("install: addons directory", f"{grp} {mode}")
    enabled = sh("systemctl", "is-enabled", TIMER, check=False).stdout.strip()
    active = sh("systemctl", "is-active", TIMER, check=False).stdout.strip()
    if enabled == "enabled" or active == "active":
        fail(f"the timer is {enabled}/{active} right after install; README: not enabled on install")
    ok("install: timer not enabled", f"{enabled}, {active}")


def readme_install():
    # 1. The config, readable by the service user.
    write(CONFIG, config(), 0o640, USER)
    # 2. First render.
    sh("systemctl", "start", UNIT)
    text = read(INCLUDE)
    if f"define web_v4 = {PRIMARY}" not in text:
        fail(f"first render of {INCLUDE}:\n{text}")
    ok("README step 2: systemctl start renders", " | ".join(l for l in text.splitlines() if l.startswith("define")))
    owner = out("stat", "-c", "%U:%G %a", INCLUDE)
    ok("README step 2: include written by the service user", owner)
    if not owner.startswith(f"{USER}:"):
        fail(f"{INCLUDE} is {owner}, expected to be written by {USER}")
    # 3. Include it in nftables.conf and reload nftables. Step 2 did not start nftables.service
    #    (on a fresh Debian it is neither enabled nor running, and the service never pulls it
    #    in); enable it, or the firewall waits for the timer at boot.
    was_active = show("nftables.service", "ActiveState")
    if was_active != "inactive":
        fail(f"nftables.service is {was_active} after the first run; it must not be started as a side effect")
    write("/etc/nftables.conf", NFTABLES_CONF)
    was = (show("nftables.service", "UnitFileState"), show("nftables.service", "ActiveState"))
    sh("systemctl", "enable", "--now", "nftables.service")
    sh("systemctl", "reload", "nftables.service")
    if ruleset_target() != PRIMARY:
        fail(f"ruleset after reloading nftables:\n{out('nft', 'list', 'ruleset')}")
    ok("README step 3: nftables.service loads the include",
       f"nftables.service was {was[0]}/{was[1]}; now ip daddr {PRIMARY} tcp dport 8080 in the ruleset")


def readme_enable_timer():
    """Returns a journal cursor from just before."""
    c = cursor()
    # 4. The timer.
    sh("systemctl", "enable", "--now", TIMER)
    ok("README step 4: timer", f"{show(TIMER, 'UnitFileState')}, {show(TIMER, 'ActiveState')}")
    return c


# --- Failover and failback ----------------------------------------------------------------------

def failover(listeners, c):
    """c: a journal cursor from before the timer's first run."""
    timer = {k: v for s, k, v in unit_directives(f"/lib/systemd/system/{TIMER}") if s == "Timer"}
    interval, accuracy = seconds(timer["OnUnitActiveSec"]), seconds(timer["AccuracySec"])
    # README, "Latency": a refused connect is noticed after fall x T (fall = rise = 1 here),
    # plus tens of milliseconds of apply; the timer may fire up to AccuracySec late (systemd
    # coalesces timers within that window, so in practice it runs every T + AccuracySec). The slack
    # covers a loaded CI machine.
    bound = interval + accuracy + 2.0
    # One unchanged run first, so the journal shows what such a run logs.
    wait_for("an unchanged timer run", lambda: unchanged_after(c) >= 1, 10 + interval + accuracy + 5)
    listeners[PRIMARY].stop()
    target, took = wait_for(f"failover to {BACKUP} in the ruleset",
                            lambda: ruleset_target() == BACKUP and BACKUP, bound + 5, 0.05)
    if took > bound:
        fail(f"failover took {took:.2f}s, documented bound {bound:.1f}s")
    ok("failover reaches nft list ruleset", f"{PRIMARY} -> {BACKUP} in {took:.2f}s (bound {bound:.1f}s)")
    listeners[PRIMARY] = Listener(PRIMARY)
    target, took = wait_for(f"failback to {PRIMARY} in the ruleset",
                            lambda: ruleset_target() == PRIMARY and PRIMARY, bound + 5, 0.05)
    if took > bound:
        fail(f"failback took {took:.2f}s, documented bound {bound:.1f}s")
    ok("failback reaches nft list ruleset", f"{BACKUP} -> {PRIMARY} in {took:.2f}s (bound {bound:.1f}s)")
    wait_for("an unchanged run after failback", lambda: unchanged_after(c) >= 2, interval + accuracy + 5)

    entries = journal(c)
    errors = [f"<{e.get('PRIORITY')}> {e.get('SYSLOG_IDENTIFIER')}: {message(e)}"
              for e in entries if int(e.get("PRIORITY", 6)) <= 3]
    if errors:
        fail("error-priority lines in the journal:\n" + "\n".join(errors))
    prios = {}
    for e in entries:
        prios[e.get("PRIORITY")] = prios.get(e.get("PRIORITY"), 0) + 1
    ok("journal: no error-priority lines",
       f"{len(entries)} lines from {UNIT}, none at err or above (by priority: {dict(sorted(prios.items()))})")
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "nftables-failover"]
    transitions = [message(e) for e in ours if re.match(r"^web_v4: \S+ -> \S+", message(e))]
    expected = [f"web_v4: {PRIMARY} -> {BACKUP} ", f"web_v4: {BACKUP} -> {PRIMARY} "]
    if len(transitions) != 2 or not all(t.startswith(x) for t, x in zip(transitions, expected)):
        fail(f"expected one transition line per change, {expected}, got {transitions}")
    ok("journal: one transition line per change", " / ".join(transitions))
    # Unchanged runs: every line of such a run (the binary's and anything it started) at info
    # or below, and no sudo at all.
    # Split into runs at PID 1's "Deactivated successfully" line that ends each (journalctl -u
    # includes PID 1's messages about the unit; stream lines do not always carry an invocation
    # id, and a run's "Starting" line may come before its first line in the journal's order).
    runs, current = [], []
    for e in journal(c, "-u", UNIT):
        if e.get("SYSLOG_IDENTIFIER") != "systemd":
            current.append(e)
        elif message(e).endswith(": Deactivated successfully."):
            runs.append(current)
            current = []
    # The timer's cadence: the time between the first lines of consecutive runs.
    starts = [int(r[0]["__REALTIME_TIMESTAMP"]) / 1e6 for r in runs if r]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    if not gaps or any(g < interval - 0.5 or g > bound for g in gaps):
        fail(f"runs {gaps} s apart; the timer says every {interval:g} s (AccuracySec {accuracy:g} s)")
    ok("timer cadence", f"{len(starts)} runs, {', '.join(f'{g:.2f}' for g in gaps)} s apart "
       f"(OnUnitActiveSec {interval:g} s, AccuracySec {accuracy:g} s)")
    unchanged = [r for r in runs if any(message(e).endswith(": unchanged") for e in r)]
    if len(unchanged) < 2:
        fail(f"expected at least two unchanged runs, found {len(unchanged)}: " +
             repr([[message(e) for e in r] for r in runs]))
    for r in unchanged:
        lines = [(int(e.get("PRIORITY", 6)), message(e)) for e in r]
        if lines != [(6, f"{INCLUDE}: unchanged")]:
            fail(f"an unchanged run logged other than one info line: {lines}")
    ok("journal: unchanged runs log nothing above info",
       f"{len(unchanged)} unchanged runs, each only '{INCLUDE}: unchanged' at info, no sudo")


# --- Hardening ----------------------------------------------------------------------------------

CAPS = ["chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
        "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin",
        "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace",
        "sys_pacct", "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
        "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
        "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read",
        "perfmon", "bpf", "checkpoint_restore"]

# Settings that make systemd set NoNewPrivileges for a unit with User= (systemd.exec(5)).
IMPLY_NNP = {"NoNewPrivileges", "DynamicUser", "LockPersonality", "MemoryDenyWriteExecute",
             "PrivateDevices", "ProtectClock", "ProtectHostname", "ProtectKernelLogs",
             "ProtectKernelModules", "ProtectKernelTunables", "RestrictAddressFamilies",
             "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
             "SystemCallArchitectures", "SystemCallFilter", "SystemCallLog"}
SECCOMP = {"SystemCallFilter", "SystemCallArchitectures", "RestrictAddressFamilies",
           "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
           "MemoryDenyWriteExecute", "ProtectClock", "ProtectHostname", "ProtectKernelLogs",
           "ProtectKernelModules", "SystemCallLog", "PrivateDevices", "ProtectKernelTunables"}


def caps(hexmask):
    v = int(hexmask, 16)
    return {CAPS[i] if i < len(CAPS) else f"cap_{i}" for i in range(64) if v >> i & 1}


def cap_setting(value):
    """The capability set a CapabilityBoundingSet=/AmbientCapabilities= value leaves."""
    invert = value.startswith("~")
    names = {n.lower().removeprefix("cap_") for n in value.lstrip("~").split()}
    return set(CAPS) - names if invert else names


def status(pid):
    return dict(l.split(":\t", 1) for l in read(f"/proc/{pid}/status").splitlines() if ":\t" in l)


def mounts(pid):
    """mount point -> (per-mount options, super options) of a process's mount namespace."""
    result = {}
    for line in read(f"/proc/{pid}/mountinfo").splitlines():
        f = line.split()
        sep = f.index("-")
        result[f[4].replace("\\040", " ")] = (f[5].split(","), f[sep + 3].split(","))
    return result


def writable(m, path):
    """Whether the mount that covers path is read-write."""
    best = max((p for p in m if path == p or path.startswith(p.rstrip("/") + "/")), key=len)
    return "rw" in m[best][0] and "rw" in m[best][1], best


def service_sandbox():
    """The shipped unit's settings, in effect on a running service process."""
    unit = f"/lib/systemd/system/{UNIT}"
    service = [(k, v) for s, k, v in unit_directives(unit) if s == "Service"]
    keys = {k for k, _ in service}
    setting = {k: v for k, v in service}
    shipped = read(f"{TEST}/systemd/{UNIT}")
    if read(unit) != shipped:
        fail(f"the installed {unit} differs from systemd/{UNIT}")

    # systemctl show: every [Service] directive of the shipped unit is what systemd loaded.
    shown = []
    for k, v in service:
        if k.startswith("Exec") or k in ("Type",):
            continue
        # systemctl show names time spans in microseconds (TimeoutStartSec -> TimeoutStartUSec).
        prop = k[:-3] + "USec" if k.endswith("Sec") else k
        got = show(UNIT, prop)
        want = v
        if k in EXPANDED:
            log(f"note: {k}= is shown expanded by systemctl; compared only as set: {got[:60]}")
            same = bool(got)
        elif k == "CapabilityBoundingSet" or k == "AmbientCapabilities":
            same = cap_setting(v) == cap_setting(got or "~")
        elif k.endswith("Sec"):
            same = seconds(v) == seconds(got)
        elif re.fullmatch(r"\d+[KMGT]?", v) and got.isdigit():
            # Sizes: systemctl shows bytes (MemoryMax=256M -> 268435456).
            same = size(v) == int(got)
        elif k.endswith("Mode") or k == "UMask":
            same = int(v, 8) == int(got, 8)
        elif v in ("yes", "true", "on", "no", "false", "off") and got in ("yes", "no"):
            same = (v in ("yes", "true", "on")) == (got == "yes")
        else:
            same = sorted(got.split()) == sorted(v.split())
        if not same:
            fail(f"systemctl show {UNIT} -p {k}: {got!r}, the unit says {want!r}")
        shown.append(f"{prop}={got}")
    ok("sandbox: systemctl show matches every directive of the shipped unit", "; ".join(shown))

    # A run that stays alive: one more variable whose only candidate never answers.
    sh("systemctl", "stop", TIMER)
    write(CONFIG, config({"hold": {"ip4": [BLACKHOLE], "port": 9, "timeout_ms": 2500}}), 0o640, USER)
    sh("systemctl", "start", "--no-block", UNIT)
    pid, _ = wait_for("the service's main process", lambda: (
        (p := show(UNIT, "MainPID")) != "0" and os.path.exists(f"/proc/{p}/exe")
        and os.readlink(f"/proc/{p}/exe") == "/usr/bin/nftables-failover" and p), 10, 0.02)
    st, m = status(pid), mounts(pid)
    pid1 = status(1)
    pw = out("getent", "passwd", USER).split(":")
    uids, gids = set(st["Uid"].split()), set(st["Gid"].split())
    if uids != {pw[2]} or gids != {pw[3]}:
        fail(f"service process runs as uid {st['Uid']} gid {st['Gid']}, expected {pw[2]}/{pw[3]}")
    ok("service runs as the service user", f"pid {pid} Uid {st['Uid']}, Gid {st['Gid']} ({USER})")

    bnd = caps(st["CapBnd"])
    want = caps(pid1["CapBnd"])
    if "CapabilityBoundingSet" in setting:
        want &= cap_setting(setting["CapabilityBoundingSet"])
    if bnd != want:
        fail(f"CapBnd {st['CapBnd']} = {sorted(bnd)}, expected {sorted(want)}")
    ok("sandbox: capability bounding set", f"CapBnd {st['CapBnd']}: {len(bnd)} capabilities" +
       (f" = CapabilityBoundingSet {sorted(bnd)}" if "CapabilityBoundingSet" in setting
        else " (none removed: no CapabilityBoundingSet=, same as PID 1)"))
    ambient = cap_setting(setting.get("AmbientCapabilities", "")) & want
    for field in ("CapEff", "CapPrm", "CapAmb"):
        if caps(st[field]) != ambient:
            fail(f"{field} {st[field]} = {sorted(caps(st[field]))}, expected {sorted(ambient)}")
    ok("sandbox: no effective capabilities", f"CapEff {st['CapEff']} CapPrm {st['CapPrm']} CapAmb {st['CapAmb']}")
    nnp = any(setting.get(k, "no") not in ("no", "false", "off", "") for k in keys & IMPLY_NNP)
    if st["NoNewPrivs"] != str(int(nnp)):
        fail(f"NoNewPrivs {st['NoNewPrivs']}, expected {int(nnp)} (sudo needs 0)")
    # nspawn filters the whole container, so compare with PID 1: the unit adds filters only if
    # it sets something that systemd implements with seccomp.
    seccomp = bool(keys & SECCOMP)
    filters = int(st.get("Seccomp_filters", st["Seccomp"] != "0"))
    base = int(pid1.get("Seccomp_filters", pid1["Seccomp"] != "0"))
    if (filters > base) != seccomp:
        fail(f"Seccomp_filters {filters} (PID 1 {base}), the unit {'sets' if seccomp else 'sets no'} seccomp filters")
    ok("sandbox: NoNewPrivs and seccomp", f"NoNewPrivs {st['NoNewPrivs']}, Seccomp_filters {filters} "
       f"(PID 1 of the container, i.e. nspawn's: {base})")

    def rw(path):
        # Through the process's root, so in its mount namespace; statvfs has the final word
        # (mountinfo lists stacked mounts).
        return not os.statvfs(f"/proc/{pid}/root{path}").f_flag & os.ST_RDONLY

    checked = []
    ps = setting.get("ProtectSystem", "no")
    if ps in ("strict", "full", "yes", "true"):
        paths = {"strict": ["/", "/usr", "/etc", "/var"], "full": ["/usr", "/boot", "/etc"]}.get(ps, ["/usr"])
        for p in paths:
            if rw(p):
                fail(f"ProtectSystem={ps}: {p} is writable for the service (mount {writable(m, p)[1]})")
        checked.append(f"ProtectSystem={ps}: {', '.join(paths)} read-only")
    for entry in setting.get("ReadWritePaths", "").split():
        path = entry.lstrip("-+")
        if not rw(path):
            fail(f"ReadWritePaths: {path} is read-only for the service (mount {writable(m, path)[1]})")
        checked.append(f"ReadWritePaths {path} rw")
    for ro in setting.get("ReadOnlyPaths", "").split():
        path = ro.lstrip("-+")
        if os.path.exists(path) and rw(path):
            fail(f"ReadOnlyPaths: {path} is writable for the service")
        checked.append(f"ReadOnlyPaths {path} ro")
    if setting.get("ProtectHome", "no") not in ("no", "false"):
        for p in ("/home", "/root", "/run/user"):
            if p not in m:
                fail(f"ProtectHome: nothing mounted over {p} for the service")
        checked.append("ProtectHome: /home /root /run/user covered")
    if setting.get("PrivateTmp", "no") in ("yes", "true"):
        for p in ("/tmp", "/var/tmp"):
            if p not in m or not rw(p):
                fail(f"PrivateTmp: no private writable {p} for the service")
        checked.append("PrivateTmp: own /tmp and /var/tmp")
    if setting.get("ProtectControlGroups", "no") in ("yes", "true"):
        if rw("/sys/fs/cgroup"):
            fail("ProtectControlGroups: /sys/fs/cgroup is writable for the service")
        checked.append("ProtectControlGroups: /sys/fs/cgroup ro")
    if "ProtectProc" in setting:
        if f"hidepid={setting['ProtectProc']}" not in m["/proc"][1]:
            fail(f"ProtectProc={setting['ProtectProc']}: /proc mounted with {m['/proc'][1]}")
        checked.append(f"ProtectProc: /proc hidepid={setting['ProtectProc']}")
    if "ProcSubset" in setting:
        if f"subset={setting['ProcSubset']}" not in m["/proc"][1]:
            fail(f"ProcSubset={setting['ProcSubset']}: /proc mounted with {m['/proc'][1]}")
        checked.append(f"ProcSubset: subset={setting['ProcSubset']}")
    if setting.get("PrivateMounts", "no") in ("yes", "true"):
        if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/1/ns/mnt"):
            fail("PrivateMounts: the service shares PID 1's mount namespace")
        checked.append("PrivateMounts: own mount namespace")
    # Resource limits: the service's cgroup (unified hierarchy).
    cg = read(f"/proc/{pid}/cgroup").strip().split("::", 1)[1]
    for key, file in (("MemoryMax", "memory.max"), ("TasksMax", "pids.max")):
        if key in setting:
            if not os.path.exists(f"/sys/fs/cgroup{cg}/{file}"):
                # A host with a hybrid hierarchy keeps the controller on its v1 side.
                log(f"note: {key}= not checked in effect: no {file} in {cg} (controller not delegated)")
                continue
            got = read(f"/sys/fs/cgroup{cg}/{file}").strip()
            if got != show(UNIT, key):
                fail(f"{key}={setting[key]}: {cg}/{file} is {got}, systemctl show says {show(UNIT, key)}")
            checked.append(f"{key}: {file} {got}")
    if setting.get("ProtectKernelTunables", "no") in ("yes", "true"):
        if rw("/proc/sys"):
            fail("ProtectKernelTunables: /proc/sys writable")
        checked.append("ProtectKernelTunables: /proc/sys ro")
    if setting.get("PrivateDevices", "no") in ("yes", "true"):
        if "/dev" not in m:
            fail("PrivateDevices: no private /dev")
        checked.append("PrivateDevices: private /dev")
    if setting.get("UMask"):
        umask = re.search(r"^Umask:\s*(\d+)", read(f"/proc/{pid}/status"), re.M).group(1)
        if int(umask, 8) != int(setting["UMask"], 8):
            fail(f"UMask {setting['UMask']}, the process has {umask}")
        checked.append(f"UMask {umask}")
    rt = f"/run/{setting.get('RuntimeDirectory', '')}"
    if "RuntimeDirectory" in setting:
        mode = f"{os.stat(rt).st_mode & 0o777:o}"
        if out("stat", "-c", "%U", rt) != USER or int(mode, 8) != int(setting.get("RuntimeDirectoryMode", "755"), 8):
            fail(f"{rt}: owner {out('stat', '-c', '%U', rt)} mode {mode}")
        checked.append(f"RuntimeDirectory {rt} {USER} {mode}")
    ok("sandbox: mounts and directories of the running service", "; ".join(checked))
    unknown = sorted(keys - KNOWN - IMPLY_NNP)
    if unknown:
        log(f"note: no in-effect check for {unknown} (systemctl show only)")

    # The held run ends by itself; its runtime directory stays (RuntimeDirectoryPreserve=yes:
    # the watcher may be using it), still the service user's alone.
    wait_for("the held run to end", lambda: show(UNIT, "ActiveState") == "inactive", 15)
    if out("stat", "-c", "%U %a", rt) != f"{USER} 700":
        fail(f"{rt} after the run: {out('stat', '-c', '%U %a', rt)}")
    write(CONFIG, config(), 0o640, USER)
    sh("systemctl", "start", UNIT)


# Shown by systemctl in a form that cannot be compared with the unit's text (groups expanded).
EXPANDED = {"SystemCallFilter", "RestrictAddressFamilies", "SystemCallArchitectures"}

KNOWN = {"Type", "ExecStart", "User", "Group", "TimeoutStartSec", "RuntimeDirectory",
         "RuntimeDirectoryMode", "StateDirectory", "StateDirectoryMode", "UMask", "ProtectSystem",
         "ReadWritePaths", "ReadOnlyPaths", "ProtectHome", "PrivateTmp", "ProtectControlGroups",
         "ProtectProc", "ProcSubset", "CapabilityBoundingSet", "AmbientCapabilities",
         "PrivateMounts", "MemoryMax", "TasksMax"}


# Without the unit's ReadOnlyPaths=/run /dev/shm /dev/mqueue, systemd 252 left /run, /run/lock,
# /dev/shm and /dev/mqueue writable for the service (ProtectSystem=strict exempts /dev, and with
# ProtectControlGroups=yes does not make /run read-only). Any writable path outside the allowed
# ones fails the test.


def service_context():
    """The probe as the service's ExecStart: what it can write, and what sudo lets it do."""
    dropin = f"/run/systemd/system/{UNIT}.d"
    os.makedirs(dropin, exist_ok=True)
    write(f"{dropin}/probe.conf",
          f"[Service]\nExecStart=\nExecStart=/usr/bin/python3 {TEST}/boot/inside.py probe\n")
    sh("systemctl", "daemon-reload")
    try:
        marker = "/tmp/boot-test-host-tmp"
        write(marker, "")
        p = sh("systemctl", "start", UNIT, check=False, timeout=120)
        result = f"{STATE}/probe.json"
        if p.returncode != 0 or not os.path.exists(result):
            fail(f"probe run failed:\n{p.stderr}\n" + out("journalctl", "--no-pager", "-n", "30", "-u", UNIT))
        probe = json.loads(read(result))
        os.unlink(result)
    finally:
        shutil.rmtree(dropin)
        sh("systemctl", "daemon-reload")

    if probe["uid"] != int(out("id", "-u", USER)):
        fail(f"probe ran as uid {probe['uid']}")
    allowed = {ADDONS, probe["runtime"], probe["state"], "/tmp", "/var/tmp"}
    extra = set(probe["writable"]) - allowed
    if extra:
        fail(f"the service can write outside its allowed paths: {sorted(extra)}")
    # The same at mount level: the unit's sandbox, not file permissions, must keep root's
    # children (sudo, nft) from writing elsewhere.
    # /dev and its mounts are API file systems that ProtectSystem= exempts by design.
    extra = {m for m in probe["rw_mounts"] if m != "/dev" and not m.startswith("/dev/")} - allowed
    if extra:
        fail(f"the service's sandbox leaves writable mounts outside its allowed paths: {sorted(extra)}")
    ok("sandbox: read-write mounts in the service's mount namespace", f"{probe['rw_mounts']}")
    if probe["sees_host_tmp"]:
        fail("the service's /tmp is the system's /tmp (PrivateTmp)")
    missing = sorted({ADDONS, probe["runtime"], probe["state"]} - set(probe["writable"]))
    if missing:
        fail(f"the service cannot write {missing}")
    ok("sandbox: writable directories from the service's context",
       f"{len(probe['scanned'])} directories scanned, writable only {sorted(probe['writable'])}"
       f" (/tmp, /var/tmp private); write to /etc: {probe['etc_write']}")

    documented = readme_sudo_commands()
    if sorted(probe["sudo_list"]) != sorted(documented):
        fail(f"sudo -l from the service: {probe['sudo_list']}, README documents {documented}")
    ok("sudo: sudo -n -l from the service lists exactly the README's commands", "; ".join(probe["sudo_list"]))
    for cmd, rc, err in probe["sudo_allowed"]:
        if rc != 0:
            fail(f"documented command refused or failed: sudo -n {cmd}: {rc} {err}")
    ok("sudo: each documented command runs", ", ".join(f"{c} -> {r}" for c, r, _ in probe["sudo_allowed"]))
    for cmd, rc, err in probe["sudo_denied"]:
        if rc == 0 or not re.search(r"password is required|not allowed", err):
            fail(f"sudo -n {cmd} was not refused by sudo: {rc} {err}")
    ok("sudo: everything else refused", f"{len(probe['sudo_denied'])} refused: " +
       "; ".join(c for c, _, _ in probe["sudo_denied"]))


def readme_sudo_commands():
    text = read(f"{DOC}/docs/security.md")
    block = text.split("**Privileges.**", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return [l.strip() for l in block.splitlines() if l.strip()]


def probe():
    """Runs as the service's ExecStart (see service_context)."""
    rt, state = os.environ["RUNTIME_DIRECTORY"], os.environ["STATE_DIRECTORY"]
    scanned, can_write, rw_mounts = [], [], set()
    m = mounts("self")
    for d, subdirs, _ in os.walk("/"):
        if d.startswith(("/proc", "/sys")):
            subdirs[:] = []
            continue
        scanned.append(d)
        if os.access(d, os.W_OK):
            can_write.append(d)
        # What root could write from here (sudo's children share this mount namespace).
        if not os.statvfs(d).f_flag & os.ST_RDONLY:
            rw_mounts.add(writable(m, d)[1])
    try:
        open("/etc/boot-test", "w")
        etc = "succeeded"
    except OSError as e:
        etc = e.strerror
    # A valid staged config for the first sudo rule, and a valid (empty) live-mode batch.
    write(f"{rt}/main.nft", "table inet boot_probe {}\n")
    write(f"{rt}/live.json", '{"nftables": [{"metainfo": {"json_schema_version": 1}}]}\n')

    def sudo(*cmd):
        p = subprocess.run(["sudo", "-n", *cmd], capture_output=True, text=True, timeout=30)
        return [" ".join(cmd), p.returncode, p.stderr.strip()]

    listing = subprocess.run(["sudo", "-n", "-l"], capture_output=True, text=True).stdout
    # "User ... may run the following commands on HOST:\n    (root) TIMEOUT=20s NOPASSWD: a, b, c";
    # the runas list, options (NAME=value) and tags (NAME:) go, the commands stay.
    rules = listing.split("may run the following commands", 1)[1].split("\n", 1)[1]
    rules = re.sub(r"\(root\)|\b[A-Z_]+=\S+|\b[A-Z_]+:", " ", rules)
    sudo_list = [" ".join(c.split()) for c in rules.split(",") if c.strip()]
    allowed = [sudo(*c.split()) for c in readme_sudo_commands()]
    denied = [sudo(*c.split()) for c in [
        "/usr/sbin/nft list ruleset",
        "/usr/sbin/nft flush ruleset",
        "/usr/sbin/nft -f /etc/nftables.conf",
        "/usr/sbin/nft -c -f /etc/shadow",
        "/usr/sbin/nft -c -f /etc/nftables.conf -e",
        "/usr/sbin/nft -c -f /run/nftables-failover/../../etc/shadow",
        "/usr/sbin/nft -cf /etc/nftables.conf",
        "/usr/bin/systemctl restart nftables.service",
        "/usr/bin/systemctl stop nftables.service",
        "/usr/bin/systemctl reload nftables",
        "/usr/bin/systemctl reload nftables.service sshd.service",
        "/bin/sh -c id",
        "-u nobody /usr/sbin/nft -c -f /etc/nftables.conf",
        "-e /etc/nftables.conf",
    ]]
    result = {"uid": os.getuid(), "runtime": rt, "state": state, "scanned": scanned,
              "writable": can_write, "rw_mounts": sorted(rw_mounts), "sees_host_tmp": os.path.exists("/tmp/boot-test-host-tmp"),
              "etc_write": etc, "sudo_list": sudo_list, "sudo_allowed": allowed,
              "sudo_denied": denied}
    write(f"{state}/probe.json", json.dumps(result))


def override():
    """README, "Optional: validate inside nftables.service"."""
    d = "/etc/systemd/system/nftables.service.d"
    os.makedirs(d, exist_ok=True)
    shutil.copy(f"{DOC}/examples/nftables.service.d/override.conf", d)
    sh("systemctl", "daemon-reload")
    sh("systemctl", "reload", "nftables.service")
    before = out("nft", "list", "ruleset")
    good = read("/etc/nftables.conf")
    write("/etc/nftables.conf", good.replace("policy accept;", "policy accept; this is not nft;", 1))
    p = sh("systemctl", "reload", "nftables.service", check=False)
    after = out("nft", "list", "ruleset")
    state = show("nftables.service", "ActiveState")
    write("/etc/nftables.conf", good)
    if p.returncode == 0:
        fail("systemctl reload nftables succeeded with a broken /etc/nftables.conf")
    if after != before:
        fail(f"the broken reload changed the ruleset:\n{before}\n---\n{after}")
    if state != "active":
        fail(f"nftables.service is {state} after the refused reload")
    sh("systemctl", "reload", "nftables.service")
    ok("override: broken config makes reload fail, ruleset kept",
       f"reload exit {p.returncode}, ruleset unchanged ({len(before.splitlines())} lines), nftables.service {state}")


# --- Package life cycle -------------------------------------------------------------------------

def lifecycle():
    sh("systemctl", "enable", "--now", TIMER)
    wait_for("a state file", lambda: os.path.exists(f"{STATE}/state.json"), 10)
    conf = (read(CONFIG), out("stat", "-c", "%U:%G %a", CONFIG))
    state_vars = set(json.loads(read(f"{STATE}/state.json")).get("variables", {}) or ["?"])
    deb = glob.glob(f"{TEST}/deb/*.deb")[0]
    sh("dpkg", "-i", deb)
    if (read(CONFIG), out("stat", "-c", "%U:%G %a", CONFIG)) != conf:
        fail("the upgrade changed the config")
    if not os.path.exists(f"{STATE}/state.json"):
        fail("the upgrade removed the state")
    after = set(json.loads(read(f"{STATE}/state.json")).get("variables", {}) or ["?"])
    if after != state_vars:
        fail(f"state after upgrade has {after}, before {state_vars}")
    enabled = f'{show(TIMER, "UnitFileState")}/{show(TIMER, "ActiveState")}'
    if enabled != "enabled/active":
        fail(f"timer is {enabled} after the upgrade: failover would stop until the next boot")
    sh("systemctl", "start", UNIT)
    if f"define web_v4 = {PRIMARY}" not in read(INCLUDE):
        fail("include wrong after upgrade")
    ok("upgrade: same package again", f"config kept ({conf[1]}), state kept, timer still {enabled}, next run ok")

    include = read(INCLUDE)
    sh("apt-get", "remove", "-y", "-q", "nftables-failover", timeout=120)
    active = sh("systemctl", "is-active", TIMER, check=False).stdout.strip()
    if active == "active" or os.path.exists("/usr/bin/nftables-failover"):
        fail(f"after remove: timer {active}, binary present {os.path.exists('/usr/bin/nftables-failover')}")
    if read(CONFIG) != conf[0] or read(INCLUDE) != include:
        fail("remove changed the config or the include")
    sh("nft", "-c", "-f", "/etc/nftables.conf")
    ok("remove: apt-get remove", f"timer {active}, binary gone, config and include kept, "
       f"nftables.conf still valid, user {'kept' if sh('getent', 'passwd', USER, check=False).returncode == 0 else 'gone'}")

    sh("apt-get", "purge", "-y", "-q", "nftables-failover", timeout=120)
    user = sh("getent", "passwd", USER, check=False).returncode
    group = sh("getent", "group", USER, check=False).returncode
    if user == 0 or group == 0:
        fail("purge left the user or group")
    if os.path.exists(STATE):
        fail(f"purge left {STATE}")
    if read(CONFIG) != conf[0] or read(INCLUDE) != include:
        fail("purge changed or removed the config or the include")
    owners = out("stat", "-c", "%n %U:%G", CONFIG, INCLUDE)
    if os.path.exists("/etc/sudoers.d/nftables-failover"):
        fail("purge left the sudoers file")
    sh("nft", "-c", "-f", "/etc/nftables.conf")
    ok("purge: apt-get purge", f"user and group gone, {STATE} gone, sudoers file gone, kept: "
       + owners.replace("\n", ", ") + ", nftables.conf still valid")


def first_install_orders():
    """The package installed after the site's nftables.conf already uses the defines (nftables
    failed at its start for lack of the include), and on a host that does not use
    nftables.service at all (another tool's rules must survive)."""
    d = "/etc/systemd/system/nftables.service.d"
    shutil.rmtree(d, ignore_errors=True)  # no Restart=on-failure: the unit stays failed
    sh("systemctl", "daemon-reload")
    for f in (INCLUDE, f"{ADDONS}/.failover.nft.applied"):
        if os.path.exists(f):
            os.remove(f)
    write("/etc/nftables.conf", NFTABLES_CONF)
    sh("systemctl", "enable", "nftables.service")
    sh("systemctl", "restart", "nftables.service", check=False)
    state = show("nftables.service", "ActiveState")
    if state != "failed":
        fail(f"nftables.service is {state} with an nftables.conf that uses a missing define")
    install()
    write(CONFIG, config(), 0o640, USER)
    c = cursor()
    sh("systemctl", "start", UNIT)
    state = show("nftables.service", "ActiveState")
    said = [message(e) for e in journal(c) if "started: it had failed" in message(e)]
    if state != "active" or ruleset_target() != PRIMARY or not said:
        fail(f"after the first run nftables.service is {state}, ruleset target {ruleset_target()}, "
             f"log {[message(e) for e in journal(c)]}")
    ok("first install, site config first: the failed nftables.service is started by the first run",
       f"nftables.service failed -> {state}; {said[0]}")
    sh("systemctl", "start", UNIT)
    if ruleset_target() != PRIMARY:
        fail("the second run changed the ruleset")

    # A host where nftables.service is not used: another tool owns the running rules.
    sh("systemctl", "disable", "--now", "nftables.service")
    sh("nft", "add", "table", "ip", "docker_like")
    wants = show(UNIT, "Wants")
    if "nftables.service" in wants:
        fail(f"{UNIT} Wants={wants}: starting it would start nftables.service")
    write(CONFIG, config({"db": {"ip4": [BACKUP], "port": PORT}}), 0o640, USER)
    c = cursor()
    sh("systemctl", "start", UNIT)
    state = show("nftables.service", "ActiveState")
    rules = out("nft", "list", "ruleset")
    said = [message(e) for e in journal(c) if "installed, not loaded" in message(e)]
    if state != "inactive" or "table ip docker_like" not in rules or not said:
        fail(f"nftables.service {state}, ruleset:\n{rules}\nlog {[message(e) for e in journal(c)]}")
    if f"define db_v4 = {BACKUP}" not in read(INCLUDE):
        fail(f"the include was not installed:\n{read(INCLUDE)}")
    ok("first install, nftables.service not in use: never started, other rules kept",
       f"nftables.service {state}, table ip docker_like still loaded; {said[0][:90]}")
    sh("nft", "delete", "table", "ip", "docker_like")


def ansible_role(listeners):
    """README "Deploying to many routers": the role applied with the fresh package, twice (the
    second run changes nothing), the timer failing over and back at the role's interval, and a
    play with an invalid variable failing with the deployed config left as it was."""
    sh("systemctl", "enable", "--now", "nftables.service")
    deb = glob.glob(f"{TEST}/deb/*.deb")[0]

    def play(variables, name):
        doc = [{
            "hosts": "localhost",
            "gather_facts": False,
            "roles": [{
                "role": "nftables_failover",
                "vars": {
                    "nftables_failover_deb": deb,
                    "nftables_failover_variables": variables,
                    "nftables_failover_settings": {"timeout_ms": 500},
                    "nftables_failover_extra": {"metrics": {"path": f"{STATE}/metrics.prom"}},
                    "nftables_failover_timer_interval": "2s",
                    "nftables_failover_watch": True,
                    "nftables_failover_watch_interval": "3s",
                },
            }],
        }]
        path = f"/root/{name}.yml"
        write(path, json.dumps(doc))  # JSON is YAML
        env = dict(os.environ, ANSIBLE_ROLES_PATH=f"{TEST}/ansible/roles", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP="/root/.ansible/tmp")
        return sh("ansible-playbook", "-c", "local", "-i", "localhost,", path,
                  check=False, timeout=300, env=env)

    def recap(p):
        m = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", p.stdout)
        if not m:
            fail(f"no play recap:\n{p.stdout[-3000:]}{p.stderr[-2000:]}")
        return tuple(int(x) for x in m.groups())

    good = {"web": {"ip4": [PRIMARY, BACKUP], "port": PORT}}
    first = recap(play(good, "site"))
    if first[3] != 0:
        fail(f"the role failed: {first}")
    second = recap(play(good, "site"))
    if second[1] != 0 or second[3] != 0:
        fail(f"the second run is not idempotent: ok/changed/unreachable/failed {second}")
    interval = show(TIMER, "TimersMonotonic")
    if "2s" not in interval and "OnUnitActiveUSec=2s" not in interval:
        fail(f"the timer did not get the role's interval: {interval}")
    ok("ansible: role applied twice", f"first ok={first[0]} changed={first[1]}, second changed={second[1]}; timer {interval[:80]}")
    watch_exec = show(WATCH, "ExecStart")
    if show(WATCH, "ActiveState") != "active" or "--interval 3s" not in watch_exec:
        fail(f"the role's watcher: {show(WATCH, 'ActiveState')}, {watch_exec}")
    ok("ansible: the role enables the watcher at its interval", f"{WATCH} active, {watch_exec[:100]}")

    listeners[PRIMARY].stop()
    _, took = wait_for("failover by the role's timer", lambda: ruleset_target() == BACKUP, 15)
    listeners[PRIMARY] = Listener(PRIMARY)
    _, back = wait_for("failback by the role's timer", lambda: ruleset_target() == PRIMARY, 15)
    ok("ansible: the deployed timer fails over and back", f"{took:.1f} s and {back:.1f} s")

    before = read(CONFIG)
    bad = recap(play({"web": {"ip4": ["not-an-address"], "port": PORT}}, "bad"))
    if bad[3] == 0:
        fail("a play with an invalid variable did not fail")
    if read(CONFIG) != before:
        fail("the invalid play changed the deployed config")
    ok("ansible: an invalid variable fails the play", f"failed={bad[3]}, {CONFIG} unchanged")


WATCH = "nftables-failover-watch.service"
UPLINKS = [("198.51.100.2", "198.51.100.1"), ("198.51.100.10", "198.51.100.9")]


def uplink_target():
    m = re.search(r"ip daddr (\S+) tcp dport 8081", out("nft", "list", "ruleset"))
    return m and m.group(1)


def watch_unit():
    """nftables-failover-watch.service under systemd: it reports ready after its first run,
    fails over on a carrier cut inside the container long before the timer could, keeps the
    runtime directory when a timer run ends beside it, is restarted by the watchdog when
    frozen, and stops at once with exit 0."""
    sh("systemctl", "disable", "--now", TIMER)
    isps = []
    for n, (local, gw) in enumerate(UPLINKS, 1):
        sh("ip", "netns", "add", f"isp{n}")
        sh("ip", "-n", f"isp{n}", "link", "set", "lo", "up")
        sh("ip", "link", "add", f"wan{n}", "type", "veth", "peer", "name", "r0", "netns", f"isp{n}")
        sh("ip", "addr", "add", f"{local}/29", "dev", f"wan{n}")
        sh("ip", "link", "set", f"wan{n}", "up")
        sh("ip", "-n", f"isp{n}", "addr", "add", f"{gw}/29", "dev", "r0")
        sh("ip", "-n", f"isp{n}", "link", "set", "r0", "up")
        isps.append(subprocess.Popen(
            ["ip", "netns", "exec", f"isp{n}", "python3", "-m", "http.server", "8081", "--bind", gw],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for _, gw in UPLINKS:
            wait_for(f"listener on {gw}:8081", lambda: _connects(gw), 10)
        (isp1, _), (isp2, _) = [(gw, l) for l, gw in UPLINKS]
        uplink = {"uplink": {"ip4": [isp1, isp2], "port": 8081, "fall": 3, "rise": 1,
                             "paths": [{"interface": "wan1"}, {"interface": "wan2"}]}}
        write(CONFIG, config(uplink), 0o640, USER)
        write("/etc/nftables.conf", NFTABLES_CONF.replace(
            "\t\tip daddr $web_v4", "\t\tip daddr $uplink_v4 tcp dport 8081 counter accept\n\t\tip daddr $web_v4"))
        c = cursor()
        start = time.monotonic()
        sh("systemctl", "start", WATCH, timeout=120)
        took = time.monotonic() - start
        # Type=notify: start returns once READY=1 came, i.e. after the first run.
        if uplink_target() != isp1 or show(WATCH, "ActiveState") != "active":
            fail(f"after systemctl start: {WATCH} {show(WATCH, 'ActiveState')}, uplink {uplink_target()}")
        status = show(WATCH, "StatusText")
        if "last run succeeded" not in status:
            fail(f"StatusText: {status!r}")
        ok("watch: started and ready after its first run", f"{took:.2f} s, uplink -> {isp1}; status {status!r}")

        sh("systemctl", "start", UNIT)
        if not os.path.isdir("/run/nftables-failover") or show(WATCH, "ActiveState") != "active":
            fail("a timer run ending removed /run/nftables-failover or stopped the watcher")
        ok("watch: a timer run beside it keeps the shared runtime directory", "/run/nftables-failover still there")

        timer = {k: v for s, k, v in unit_directives(f"/lib/systemd/system/{TIMER}") if s == "Timer"}
        by_timer = 3 * seconds(timer["OnUnitActiveSec"])
        sh("ip", "-n", "isp1", "link", "set", "r0", "down")
        _, cut = wait_for("failover on carrier loss", lambda: uplink_target() == isp2, 5, 0.01)
        sh("ip", "-n", "isp1", "link", "set", "r0", "up")
        _, back = wait_for("failback when the carrier returns", lambda: uplink_target() == isp1, 5, 0.01)
        said = [message(e) for e in journal(c, "-u", WATCH) if "carrier lost on wan1" in message(e)]
        if not said:
            fail(f"the journal does not name the carrier loss: {[message(e) for e in journal(c, '-u', WATCH)]}")
        ok("watch: a carrier cut fails over at once (fall 3 on the timer: >= %.0f s)" % by_timer,
           f"to {isp2} in {cut:.2f} s, back in {back:.2f} s; {said[0]}")

        pid = int(show(WATCH, "MainPID"))
        os.kill(pid, signal.SIGSTOP)
        wait_for("the watchdog to restart the frozen watcher",
                 lambda: show(WATCH, "ActiveState") == "active" and int(show(WATCH, "MainPID")) not in (0, pid),
                 40, 0.2)
        restarts = show(WATCH, "NRestarts")
        said = [message(e) for e in journal(c, "_PID=1") if "atchdog" in message(e)]
        if int(restarts) < 1 or not said:
            fail(f"NRestarts {restarts}, PID 1 said {said}")
        ok("watch: a frozen watcher is restarted by the watchdog", f"NRestarts={restarts}; {said[0]}")

        start = time.monotonic()
        sh("systemctl", "stop", WATCH)
        took = time.monotonic() - start
        result = (show(WATCH, "Result"), show(WATCH, "ExecMainStatus"))
        if took > 1.5 or result != ("success", "0"):
            fail(f"stop took {took:.2f} s, result {result}")
        ok("watch: SIGTERM stops it", f"in {took:.2f} s, exit 0")
    finally:
        for p in isps:
            p.terminate()
            p.wait(10)
        for n in (1, 2):
            sh("ip", "netns", "del", f"isp{n}", check=False)
            sh("ip", "link", "del", f"wan{n}", check=False)
        write(CONFIG, config(), 0o640, USER)
        write("/etc/nftables.conf", NFTABLES_CONF)
        sh("systemctl", "start", UNIT)


def _connects(addr, port=8081):
    try:
        socket.create_connection((addr, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def main():
    if sys.argv[1:] == ["probe"]:
        probe()
        return
    install()
    listeners = {a: Listener(a) for a in (PRIMARY, BACKUP)}
    try:
        readme_install()
        # Before step 4: the timer must not run while these change the config and the unit.
        service_context()
        service_sandbox()
        override()
        c = readme_enable_timer()
        failover(listeners, c)
        watch_unit()
        lifecycle()
        first_install_orders()
        ansible_role(listeners)
    finally:
        for l in listeners.values():
            l.stop()
    log("boot: ALL OK")


if __name__ == "__main__":
    main()
