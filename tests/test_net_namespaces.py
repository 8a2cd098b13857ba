"""net_namespaces: a namespace only `ip netns` holds, then a process in it that runs in a
(docker-shaped) container cgroup."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.tables import net_namespaces
from tests.test_containers import ID, in_cgroup, state_root  # noqa: F401 (fixtures)


def ns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def rows() -> dict[int, dict[str, object]]:
    cols = net_namespaces.collect(Collection(), Need())
    assert list(cols) == list(net_namespaces.NAMES)
    return {r["net_namespace"]: r for r in (dict(zip(cols, v, strict=True))
                                            for v in zip(*cols.values(), strict=True))}


def wait_in(ns: str, pid: int) -> None:
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{pid}/ns/net") != f"net:[{ns_inode(ns)}]":
        assert time.monotonic() < deadline, "the child never entered the namespace"
        time.sleep(0.01)


@pytest.mark.privileged
def test_names_processes_and_containers(netns: str, in_cgroup: Callable[..., int],  # noqa: F811
                                        state_root: Path) -> None:  # noqa: F811
    empty = rows()[ns_inode(netns)]
    assert (empty["name"], empty["processes"], empty["pids"], empty["is_current"],
            empty["container_ids"], empty["container_runtime"]) == (netns, 0, [], False, [],
                                                                    None)
    docker = state_root / f"var/lib/docker/containers/{ID}/config.v2.json"
    docker.parent.mkdir(parents=True)
    docker.write_text('{"Name": "/beacon"}')
    pid = in_cgroup(f"/netsql-test-{uuid.uuid4().hex[:8]}/system.slice/docker-{ID}.scope",
                    ("ip", "netns", "exec", netns, "sleep", "60"))
    wait_in(netns, pid)
    got = rows()[ns_inode(netns)]
    assert (got["processes"], got["pids"], got["container_runtime"], got["container_ids"],
            got["container_names"]) == (1, [pid], "docker", [ID], ["beacon"])
    me = rows()[procfs.own_netns()]  # type: ignore[index]
    assert me["is_current"] and me["processes"] >= 1 and me["name"] is None
