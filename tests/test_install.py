"""The choice of Debian packages `make setup` installs (install/debian.py), against machines described by hand,
and once against this machine's real dpkg database."""

import subprocess
import sys

from install.debian import NEEDS, Installed, Machine, parse_dpkg, plan
from tests.conftest import REPO

EVERY_COMMAND = {c for n in NEEDS for c in n.commands}
EVERY_FILE = {f for n in NEEDS for f in n.files}
EVERY_MODULE = {m for n in NEEDS for m in n.modules}
NODESOURCE = Installed("20.20.2-1nodesource1+repack1", provides={"nodejs-dev", "nodejs-doc", "nodejs-legacy", "npm"},
                       conflicts={"nodejs-dev", "nodejs-doc", "nodejs-legacy", "npm"})
DEBIAN_NODE = Installed("18.19.0+dfsg-6~deb12u2")
DEBIAN_NPM = Installed("9.2.0~ds1-1")


def machine(commands=EVERY_COMMAND, files=EVERY_FILE, modules=EVERY_MODULE, **packages) -> Machine:
    return Machine(set(commands), set(files), set(modules), {k.replace("_", "-"): v for k, v in packages.items()})


def test_a_complete_machine_needs_nothing():
    chosen = plan(machine(nodejs=NODESOURCE))
    assert chosen.install == [] and chosen.blocked == []


def test_nodesource_node_with_its_own_npm_gets_only_what_is_missing_and_never_debians_npm():
    # the image of issue 17: Node.js 20 from NodeSource (npm inside it), no chromium, no PostGIS, no fonts
    here = machine(commands=EVERY_COMMAND - {"chromium", "redis-server"},
                   files={f for f in EVERY_FILE if "postgis" not in f and "fonts" not in f}, nodejs=NODESOURCE)
    chosen = plan(here)
    assert chosen.install == ["postgresql-15-postgis-3", "chromium", "fonts-noto-cjk", "redis-server"]
    assert "npm" not in chosen.install and "nodejs" not in chosen.install and chosen.blocked == []


def test_debians_node_and_npm_are_accepted_as_they_are():
    chosen = plan(machine(commands=EVERY_COMMAND - {"chromium"}, nodejs=DEBIAN_NODE, npm=DEBIAN_NPM))
    assert chosen.install == ["chromium"]


def test_a_machine_without_node_gets_debians_node_and_npm():
    chosen = plan(machine(commands=EVERY_COMMAND - {"node", "npm"}))
    assert chosen.install == ["nodejs", "npm"] and chosen.blocked == []


def test_debians_npm_is_not_asked_for_beside_a_node_that_conflicts_with_it():
    # NodeSource's nodejs whose npm was removed: apt would refuse npm ("held broken packages"), so it is not
    # asked for; the person is told why instead
    chosen = plan(machine(commands=EVERY_COMMAND - {"npm"}, nodejs=NODESOURCE))
    assert chosen.install == []
    assert len(chosen.blocked) == 1 and "npm" in chosen.blocked[0] and "nodesource" in chosen.blocked[0]


def test_a_missing_python_venv_is_installed():
    assert plan(machine(modules={"venv"})).install == ["python3-venv"]


def test_dpkg_records_are_read_with_their_relations_and_only_installed_ones_count():
    text = ("nodejs\tinstall ok installed\t20.20.2-1nodesource1+repack1\tnodejs-dev, npm\t"
            "nodejs-dev, nodejs-legacy, npm (<= 1.2.14) | npm-old\n"
            "chromium\tdeinstall ok config-files\t156.0\t\t\n"
            "redis-server\tinstall ok installed\t5:7.0.15-1~deb12u10\t\t\n")
    packages = parse_dpkg(text)
    assert set(packages) == {"nodejs", "redis-server"}
    assert packages["nodejs"].conflicts == {"nodejs-dev", "nodejs-legacy", "npm", "npm-old"}
    assert packages["nodejs"].provides == {"nodejs-dev", "npm"}


def test_the_dry_run_on_this_machine_asks_for_nothing_it_already_has():
    # the suite runs after `make setup`, so every need is met here and apt is never called
    result = subprocess.run([sys.executable, "install/debian.py", "--dry-run"], cwd=REPO, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Debian packages: nothing missing"
