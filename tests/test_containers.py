"""processes.cgroup / container_id / container_runtime / container_name: real child
processes moved into real cgroups shaped as each runtime makes them, the runtimes' own
state files written to a directory of the test's (containers.ROOT)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsql import containers
from netsql.collect import Collection, Need, State
from netsql.tables import processes
from tests.conftest import need

ID = "c0ffee" + "0123456789abcdef" * 3 + "0123456789"  # 64 hex
POD = "0d9a7a4e-3c1b-4f7e-9a55-2f1e8c4b7d21"


def unified_root() -> Path | None:
    """Where this host mounts the cgroup v2 hierarchy (/sys/fs/cgroup on a pure v2
    host, /sys/fs/cgroup/unified on a hybrid one)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[:1] == ["cgroup2"]:
            return Path(pre.split()[4])
    return None


@pytest.fixture
def in_cgroup() -> Iterator[object]:
    root = unified_root()
    need(os.geteuid() == 0 and root is not None and os.access(root, os.W_OK),
         "needs root and a writable cgroup v2 hierarchy")
    assert root is not None
    made: list[Path] = []
    children: list[subprocess.Popen[bytes]] = []

    def place(path: str, argv: tuple[str, ...] = ("sleep", "60")) -> int:
        """A child (sleeping) in the cgroup PATH (created, with its parents)."""
        group = root / path.lstrip("/")
        todo = [group, *group.parents]
        for d in reversed([d for d in todo if root in d.parents and not d.exists()]):
            d.mkdir()
            made.append(d)
        child = subprocess.Popen(argv)
        children.append(child)
        (group / "cgroup.procs").write_text(str(child.pid))
        return child.pid

    yield place
    for child in children:
        child.kill()
        child.wait()
    for d in reversed(made):
        d.rmdir()


def row(pid: int) -> dict[str, object]:
    cols = processes.collect(Collection(state=State()), Need(
        frozenset({"pid", "cgroup", "container_id", "container_runtime", "container_name"}),
        frozenset({pid})))
    assert cols["pid"] == [pid]
    return {k: v[0] for k, v in cols.items()}


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(containers, "ROOT", str(tmp_path))
    return tmp_path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


RUNTIMES = [
    # (cgroup path, runtime, id, name, the runtime's state file and its text)
    (f"/netsql-test-{{u}}/system.slice/docker-{ID}.scope", "docker", ID, "web-1",
     f"var/lib/docker/containers/{ID}/config.v2.json", json.dumps({"Name": "/web-1"})),
    (f"/netsql-test-{{u}}/machine.slice/libpod-{ID}.scope/container", "podman", ID, "db",
     "var/lib/containers/storage/overlay-containers/containers.json",
     json.dumps([{"id": "f" * 64, "names": ["other"]}, {"id": ID, "names": ["db"]}])),
    (f"/netsql-test-{{u}}/kubepods.slice/kubepods-besteffort.slice/"
     f"kubepods-besteffort-pod{POD.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
     "containerd", ID, "prod/api-7d9f/api",
     f"var/log/containers/api-7d9f_prod_api-{ID}.log", ""),
    (f"/netsql-test-{{u}}/kubepods.slice/crio-{ID}.scope", "cri-o", ID, "kube-system/dns/c",
     f"var/log/containers/dns_kube-system_c-{ID}.log", ""),
]


@pytest.mark.parametrize("path,runtime,ident,name,state_file,text", RUNTIMES,
                         ids=[r[1] for r in RUNTIMES])
def test_runtime_from_a_real_cgroup(in_cgroup: object, state_root: Path, path: str,
                                    runtime: str, ident: str, name: str, state_file: str,
                                    text: str) -> None:
    path = path.format(u=uuid.uuid4().hex[:8])
    pid = in_cgroup(path)  # type: ignore[operator]
    got = row(pid)
    assert (got["cgroup"], got["container_id"], got["container_runtime"]) == (
        path, ident, runtime)
    assert got["container_name"] is None  # the runtime's files are not there yet
    write(state_root / state_file, text)
    assert row(pid)["container_name"] == name


def test_host_processes_have_no_container(in_cgroup: object, state_root: Path) -> None:
    me = row(os.getpid())
    assert me["container_id"] is None and me["container_runtime"] is None
    # A helper of a runtime (podman's conmon) and an unrelated hex-named cgroup are not
    # containers.
    for path in (f"/netsql-test-{uuid.uuid4().hex[:8]}/libpod-conmon-{ID}.scope",
                 f"/netsql-test-{uuid.uuid4().hex[:8]}/process_api/{ID[:32]}"):
        got = row(in_cgroup(path))  # type: ignore[operator]
        assert got["cgroup"] == path and got["container_id"] is None, got


@pytest.mark.parametrize("text,expected", [
    # cgroup v1 (docker's cgroupfs driver): no unified path, the controllers name it.
    ("12:pids:/docker/" + ID + "\n4:memory:/docker/" + ID + "\n0::/\n",
     ("/docker/" + ID, "docker", ID)),
    # Kubernetes, cgroupfs driver.
    (f"0::/kubepods/burstable/pod{POD}/{ID}\n", (f"/kubepods/burstable/pod{POD}/{ID}",
                                                 "containerd", ID)),
    # systemd-nspawn, both shapes, with systemd's escaping of '-'.
    ("0::/machine.slice/systemd-nspawn@build\\x2dbox.service/payload\n",
     ("/machine.slice/systemd-nspawn@build\\x2dbox.service/payload", "systemd-nspawn",
      "build-box")),
    ("1:name=systemd:/machine.slice/machine-web.scope\n0::/\n",
     ("/machine.slice/machine-web.scope", "systemd-nspawn", "web")),
    # LXC 4+ and older LXC; the monitor process is not the container.
    ("0::/lxc.payload.u1/init.scope\n", ("/lxc.payload.u1/init.scope", "lxc", "u1")),
    ("3:cpu:/lxc/u2\n", ("/lxc/u2", "lxc", "u2")),
    ("0::/lxc.monitor.u1\n", ("/lxc.monitor.u1", None, None)),
    # This sandbox's own shape: a hex-named cgroup that no runtime makes.
    ("4:memory:/process_api/05f995e21db54a53356fed5245600371\n0::/\n",
     ("/process_api/05f995e21db54a53356fed5245600371", None, None)),
    ("0::/\n", ("/", None, None)),
])
def test_cgroup_shapes(text: str, expected: tuple[str, str | None, str | None]) -> None:
    found = containers.container_of(containers.cgroup_paths(text))
    got = (containers.cgroup_of(text), found.runtime if found else None,
           found.id if found else None)
    assert got == expected


def test_nspawn_and_lxc_names_are_their_ids() -> None:
    cache: dict[containers.Container, str | None] = {}
    assert containers.container_name(containers.Container("lxc", "u1"), cache) == "u1"
    assert containers.container_name(containers.Container("docker", "0" * 64), cache) is None
