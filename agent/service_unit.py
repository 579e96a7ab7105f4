"""`veritrail agent install-service`: the agent as a hardened systemd service.

    veritrail agent install-service [--user veritrail] [--dir /var/lib/veritrail]
        [--config DIR/agent.toml] [--root /] [--watchdog-s 30] [--memory-max-mib 96] [--print]

Writes ``/etc/systemd/system/veritrail-agent.service`` and ``/etc/sysusers.d/veritrail.conf``
(the dedicated user; systemd-sysusers creates it) under ``--root`` (``/`` on the device, the
image's root file system when building one). It starts nothing: the printed next steps do.

The unit: ``Type=notify`` (the daemon sends READY=1 itself, agent.watchdog), ``WatchdogSec``
(pings only while the loop, the writer and the uplink live), ``Restart=always`` with a start
limit, SIGHUP for ``systemctl reload``, logs to the journal at info level (the agent logs ids,
sizes, counts and reasons, never payloads), and a sandbox: the dedicated user, no
capabilities, ``ProtectSystem=strict`` with the state dir the only writable path,
``NoNewPrivileges``, ``PrivateTmp``, ``MemoryMax``, ``MemoryDenyWriteExecute``, a
``SystemCallFilter`` of the ``@system-service`` set less ``@privileged @resources``,
IPv4/IPv6/Unix sockets only (`systemd-analyze security` exposure 1.2 of 10, "OK").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["UnitOptions", "render_unit", "render_sysusers", "add_parser", "cmd_install_service"]

UNIT_NAME = "veritrail-agent.service"


@dataclass(frozen=True, kw_only=True, slots=True)
class UnitOptions:
    user: str = "veritrail"
    state_dir: str = "/var/lib/veritrail"
    config: str | None = None               # default: state_dir/agent.toml
    exec_path: str = ""                     # the `veritrail` command (default: next to this Python)
    watchdog_s: int = 30
    memory_max_mib: int = 96                # hard cap; MemoryHigh (reclaim first) is 3/4 of it
    restart_s: int = 5

    def __post_init__(self) -> None:
        if not self.user or not all(c.isalnum() or c in "-_" for c in self.user) or self.user[0].isdigit():
            raise ValueError(f"--user {self.user!r}: letters, digits, '-', '_', not starting with a digit")
        if not os.path.isabs(self.state_dir):
            raise ValueError(f"--dir {self.state_dir!r}: must be an absolute path")
        if any(c.isspace() for c in self.state_dir + (self.config or "") + self.exec_path):
            raise ValueError("paths with white space are not supported in the unit")
        if not 5 <= self.watchdog_s <= 3600:
            raise ValueError(f"--watchdog-s {self.watchdog_s}: must be 5..3600")
        if not 32 <= self.memory_max_mib <= 4096:
            raise ValueError(f"--memory-max-mib {self.memory_max_mib}: must be 32..4096")

    @property
    def config_path(self) -> str:
        return self.config or str(Path(self.state_dir) / "agent.toml")


def default_exec_path() -> str:
    here = Path(sys.executable).parent / "veritrail"
    return str(here) if here.exists() else (shutil.which("veritrail") or str(here))


def render_unit(o: UnitOptions) -> str:
    state = Path(o.state_dir)
    exec_path = o.exec_path or default_exec_path()
    # under /var/lib: systemd creates the dir and gives it to the user (StateDirectory=)
    state_directory = ""
    if state.parent == Path("/var/lib"):
        state_directory = f"StateDirectory={state.name}\nStateDirectoryMode=0700\n"
    high = o.memory_max_mib * 3 // 4
    return f"""# Veritrail edge security agent. Written by `veritrail agent install-service`.
# Reload the configuration (TLS files, rules mode, limits): systemctl reload veritrail-agent
[Unit]
Description=Veritrail edge security agent
After=network-online.target time-sync.target
Wants=network-online.target
StartLimitIntervalSec=600
StartLimitBurst=10

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_path} agent run --config {o.config_path} --log-level INFO
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec={o.watchdog_s}
Restart=always
RestartSec={o.restart_s}
TimeoutStartSec=120
TimeoutStopSec=60
User={o.user}
Group={o.user}
UMask=0077
WorkingDirectory={state}
{state_directory}Environment=MALLOC_ARENA_MAX=1 PYTHONDONTWRITEBYTECODE=1
# The journal: info and above; the agent logs ids, sizes, counts and reasons, never payloads.
StandardOutput=journal
StandardError=journal
SyslogIdentifier=veritrail-agent
LogLevelMax=info
LogRateLimitIntervalSec=30s
LogRateLimitBurst=500

# Resources: the agent's goal is <= 40 MiB RSS (docs/device-makers.md); the page cache of
# its spool writes is charged here too and reclaimed first above MemoryHigh.
MemoryHigh={high}M
MemoryMax={o.memory_max_mib}M
TasksMax=32
LimitNOFILE=1024

# Sandbox
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths={state}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
PrivateMounts=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def render_sysusers(o: UnitOptions) -> str:
    return f'# Veritrail agent: its own system user (systemd-sysusers)\nu {o.user} - "Veritrail agent" {o.state_dir}\n'


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install-service", help="write a hardened systemd unit (Type=notify, watchdog)")
    p.add_argument("--user", default="veritrail", help="dedicated system user (default: veritrail)")
    p.add_argument("--dir", default="/var/lib/veritrail", help="state dir, the only writable path")
    p.add_argument("--config", help="agent.toml (default: DIR/agent.toml)")
    p.add_argument("--root", default="/", help="file system root to write into (an image's rootfs)")
    p.add_argument("--exec", dest="exec_path", default="", help="the veritrail command (default: this one)")
    p.add_argument("--watchdog-s", type=int, default=30)
    p.add_argument("--memory-max-mib", type=int, default=96)
    p.add_argument("--print", action="store_true", help="print the unit instead of writing files")


def cmd_install_service(args: argparse.Namespace) -> int:
    try:
        o = UnitOptions(user=args.user, state_dir=args.dir, config=args.config, exec_path=args.exec_path,
                        watchdog_s=args.watchdog_s, memory_max_mib=args.memory_max_mib)
    except ValueError as exc:
        print(f"veritrail agent install-service: {exc}", file=sys.stderr)
        return 2
    unit = render_unit(o)
    if args.print:
        print(unit, end="")
        return 0
    root = Path(args.root)
    written = []
    for rel, text in ((f"etc/systemd/system/{UNIT_NAME}", unit), ("etc/sysusers.d/veritrail.conf", render_sysusers(o))):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    for path in written:
        print(f"wrote {path}")
    exec_path = o.exec_path or default_exec_path()
    if not _world_executable(exec_path):
        print(f"warning: {exec_path} is not reachable by other users; user {o.user} cannot run it "
              "(install into a venv such as /opt/veritrail)", file=sys.stderr)
    print("next steps on the device:\n"
          "  systemd-sysusers\n"
          f"  chown -R {o.user}:{o.user} {o.state_dir}\n"
          "  systemctl daemon-reload\n"
          f"  systemctl enable --now {UNIT_NAME}")
    return 0


def _world_executable(path: str) -> bool:
    """Every folder on the way is searchable and the file executable by others."""
    p = Path(path)
    try:
        for part in [*reversed(p.parents), p]:
            if str(part) != "/" and not part.stat().st_mode & 0o001:
                return False
    except OSError:
        return False
    return True
