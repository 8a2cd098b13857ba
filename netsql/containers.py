"""Which container a process runs in, from its cgroup, read locally: no daemon call.

Every container runtime puts a container's processes in a cgroup whose path carries the
container's id; the runtime's own name for the container is read from its on-disk state
where that needs no daemon. docs/containers.md lists the shapes and files per runtime
(docker, podman, containerd and cri-o under Kubernetes, systemd-nspawn, lxc).

A runtime's helper processes (conmon, the LXC monitor, a pod's pause sandbox cgroup
without a container id) are not the container and get no id.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

#: Where the runtimes keep their state; tests point it at a directory of their own.
ROOT = "/"

_ID = r"([0-9a-f]{64})"
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("docker", re.compile(rf"/docker-{_ID}\.scope(?:/|$)")),
    ("docker", re.compile(rf"^/docker/{_ID}(?:/|$)")),
    ("podman", re.compile(rf"/libpod-{_ID}\.scope(?:/|$)")),
    ("podman", re.compile(rf"/libpod_parent/libpod-{_ID}(?:/|$)")),
    ("containerd", re.compile(rf"/cri-containerd-{_ID}\.scope(?:/|$)")),
    ("cri-o", re.compile(rf"/crio-{_ID}\.scope(?:/|$)")),
    # Kubernetes with the cgroupfs driver: /kubepods[/QOS]/podUID/ID (runtime unknown
    # from the path; containerd is the default).
    ("containerd", re.compile(rf"^/kubepods(?:/[a-z]+)?/pod[0-9a-f-]{{36}}/{_ID}(?:/|$)")),
    ("systemd-nspawn", re.compile(r"^/machine\.slice/systemd-nspawn@([^/]+)\.service(?:/|$)")),
    ("systemd-nspawn", re.compile(r"^/machine\.slice/machine-([^/]+)\.scope(?:/|$)")),
    ("lxc", re.compile(r"^/lxc\.payload\.([^/]+)(?:/|$)")),
    ("lxc", re.compile(r"^/lxc/([^/]+)(?:/|$)")),
)


class Container(NamedTuple):
    runtime: str
    id: str


def cgroup_paths(text: str) -> list[str]:
    """The paths of /proc/PID/cgroup, best first: the unified (v2) hierarchy, then
    systemd's v1 one, then the controllers'; duplicates and the root left out."""
    unified: list[str] = []
    systemd: list[str] = []
    others: list[str] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/"):
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            unified.append(path)
        elif controllers == "name=systemd":
            systemd.append(path)
        else:
            others.append(path)
    seen: list[str] = []
    for path in unified + systemd + others:
        if path not in seen:
            seen.append(path)
    return seen


def cgroup_of(text: str) -> str | None:
    """The cgroup path a person would name for this process ('/' when in the root)."""
    paths = cgroup_paths(text)
    if paths:
        return paths[0]
    return "/" if text.strip() else None


def container_of(paths: list[str]) -> Container | None:
    for path in paths:
        for runtime, shape in _SHAPES:
            m = shape.search(path)
            if m is None:
                continue
            ident = m.group(1)
            if runtime == "systemd-nspawn":
                ident = _systemd_unescape(ident)
            return Container(runtime, ident)
    return None


def _systemd_unescape(text: str) -> str:
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def container_name(found: Container, cache: dict[Container, str | None]) -> str | None:
    """The runtime's name for the container, from its files; None when not readable."""
    if found in cache:
        return cache[found]
    name: str | None
    try:
        name = _NAMERS[found.runtime](found.id)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        name = None
    cache[found] = name
    return name


def _root(*parts: str) -> str:
    return os.path.join(ROOT, *parts)


def _docker(ident: str) -> str | None:
    with open(_root("var/lib/docker/containers", ident, "config.v2.json"),
              encoding="utf-8") as f:
        name = json.load(f).get("Name")
    return name.lstrip("/") if isinstance(name, str) else None


def _podman(ident: str) -> str | None:
    for store in ("var/lib/containers/storage/overlay-containers/containers.json",
                  "var/lib/containers/storage/vfs-containers/containers.json"):
        try:
            with open(_root(store), encoding="utf-8") as f:
                listed = json.load(f)
        except FileNotFoundError:
            continue
        for entry in listed:
            if entry.get("id") == ident and entry.get("names"):
                return str(entry["names"][0])
    return None


def _kubernetes(ident: str) -> str | None:
    """kubelet links /var/log/containers/POD_NAMESPACE_CONTAINER-ID.log for each
    container: the name is NAMESPACE/POD/CONTAINER."""
    suffix = f"-{ident}.log"
    for entry in os.scandir(_root("var/log/containers")):
        if entry.name.endswith(suffix):
            pod, namespace, container = entry.name[: -len(suffix)].split("_", 2)
            return f"{namespace}/{pod}/{container}"
    return None


def _itself(ident: str) -> str:
    return ident


_NAMERS = {"docker": _docker, "podman": _podman, "containerd": _kubernetes,
           "cri-o": _kubernetes, "systemd-nspawn": _itself, "lxc": _itself}
