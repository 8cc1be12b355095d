"""The Debian packages the project needs, and which of them this machine is missing.

Run before any Python package is installed, so it uses the standard library only:

    python3 install/debian.py            # install what is missing (apt-get, as root or with sudo)
    python3 install/debian.py --dry-run  # print it

Each need is checked on its own, by what the project uses (a command, a file, a Python module), not by
package name: Node.js from NodeSource bundles npm and conflicts with Debian's `npm`, so a working `npm`
of any origin satisfies the need, and a package that an installed one conflicts with is never asked for.
"""

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Need:
    what: str
    package: str
    commands: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()


NEEDS = (
    Need("PostgreSQL 15 server", "postgresql-15", files=("/usr/lib/postgresql/15/bin/postgres",)),
    Need("PostGIS for PostgreSQL 15", "postgresql-15-postgis-3",
         files=("/usr/share/postgresql/15/extension/postgis.control",)),
    Need("Python venv with pip", "python3-venv", modules=("venv", "ensurepip")),
    Need("Node.js", "nodejs", commands=("node",)),
    Need("npm", "npm", commands=("npm",)),
    Need("Chromium, for the browser tests", "chromium", commands=("chromium",)),
    Need("CJK fonts, for the viewer's screenshots", "fonts-noto-cjk",
         files=("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",)),
    Need("Redis, for the shared tile cache tests", "redis-server", commands=("redis-server",)),
    Need("nginx, the reverse proxy the slow-client tests put in front", "nginx", files=("/usr/sbin/nginx",)),
    Need("mosquitto, the MQTT broker of the live feeds", "mosquitto", files=("/usr/sbin/mosquitto",)),
    Need("pgRouting for PostgreSQL 15, the drainage network's traces", "postgresql-15-pgrouting",
         files=("/usr/share/postgresql/15/extension/pgrouting.control",)),
    Need("pgBackRest, the WAL archive and point-in-time recovery", "pgbackrest", commands=("pgbackrest",)),
)


@dataclass
class Installed:
    """An installed Debian package: what it provides and what it conflicts with (names only)."""
    version: str
    provides: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)


@dataclass
class Machine:
    """What a machine has, as far as the needs ask."""
    commands: set[str]
    files: set[str]
    modules: set[str]
    packages: dict[str, Installed]

    def has(self, need: Need) -> bool:
        return (all(c in self.commands for c in need.commands) and all(f in self.files for f in need.files)
                and all(m in self.modules for m in need.modules))


@dataclass
class Plan:
    install: list[str]
    blocked: list[str]  # needs no package can meet here, with the reason


def plan(machine: Machine, needs=NEEDS) -> Plan:
    """The packages to install for the unmet needs, leaving out any that an installed package conflicts with
    or already provides."""
    install, blocked = [], []
    for need in needs:
        if machine.has(need):
            continue
        by = [name for name, p in machine.packages.items() if need.package in p.conflicts]
        provided = [name for name, p in machine.packages.items() if need.package in p.provides]
        if by:
            blocked.append(f"{need.what}: not found, and {need.package} conflicts with the installed "
                           f"{', '.join(f'{n} {machine.packages[n].version}' for n in by)}")
        elif provided:
            blocked.append(f"{need.what}: not found, though {', '.join(provided)} should provide it; "
                           f"repair that package")
        elif need.package not in install:
            install.append(need.package)
    return Plan(install, blocked)


def names(field_text: str) -> set[str]:
    """Package names in a dpkg relation field ('npm (<= 1.2.14), nodejs-dev | foo' → {npm, nodejs-dev, foo})."""
    return {alt.strip().split(" ")[0].split(":")[0] for part in field_text.split(",") for alt in part.split("|")
            if alt.strip()}


def parse_dpkg(text: str) -> dict[str, Installed]:
    """`dpkg-query -W -f '${Package}\\t${Status}\\t${Version}\\t${Provides}\\t${Conflicts}\\n'` as packages."""
    packages = {}
    for line in text.splitlines():
        package, status, version, provides, conflicts = (line.split("\t") + [""] * 5)[:5]
        if status.endswith(" installed"):
            packages[package] = Installed(version, names(provides), names(conflicts))
    return packages


def this_machine(python: str, needs=NEEDS) -> Machine:
    commands = {c for n in needs for c in n.commands if shutil.which(c)}
    files = {f for n in needs for f in n.files if glob.glob(f)}
    modules = {m for n in needs for m in n.modules
               if subprocess.run([python, "-c", f"import {m}"], capture_output=True).returncode == 0}
    dpkg = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Version}\t${Provides}\t${Conflicts}\n"],
                          capture_output=True, text=True)
    return Machine(commands, files, modules, parse_dpkg(dpkg.stdout))


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    python = os.environ.get("PYTHON", "python3")
    chosen = plan(this_machine(python))
    for reason in chosen.blocked:
        print(f"cannot install: {reason}", file=sys.stderr)
    if chosen.blocked:
        return 1
    if not chosen.install:
        print("Debian packages: nothing missing")
        return 0
    print(f"Debian packages to install: {' '.join(chosen.install)}")
    if dry:
        return 0
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    apt = [*sudo, "apt-get", "-y", "-qq", "-o", "Dpkg::Use-Pty=0"]
    for step in ([*apt, "update"], [*apt, "install", "--no-install-recommends", *chosen.install]):
        if subprocess.run(step, env=env, stdin=subprocess.DEVNULL).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
