"""A member removed with `etcdctl member remove` stops, as a removed etcd member does,
even though it never sees its removal committed: having lost its leader, it asks the
other members, learns it is not among them, and its process exits. The two left go on."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from plasmacloud.lab.control import Lab

from .conftest import etcdctl_env

pytestmark = pytest.mark.slow


def etcdctl(lab: Lab, *args: str, endpoints: str | None = None) -> subprocess.CompletedProcess[str]:
    env = etcdctl_env(lab)
    if endpoints:
        env["ETCDCTL_ENDPOINTS"] = endpoints
    return subprocess.run(["etcdctl", *args], env=env, capture_output=True, text=True, timeout=30)


def test_a_removed_member_stops_and_the_rest_serve(fresh_lab: Lab) -> None:
    members = json.loads(etcdctl(fresh_lab, "member", "list", "-w", "json").stdout)["members"]
    gone = next(m for m in members if m["name"] == "node03")
    done = etcdctl(fresh_lab, "member", "remove", f"{gone['ID']:x}")
    assert done.returncode == 0, done.stderr
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if not fresh_lab.backend.node_status("node03").running:
            break
        time.sleep(0.5)
    assert not fresh_lab.backend.node_status("node03").running, "node03 still serves"
    print(f"node03 stopped {time.monotonic() - started:.1f} s after its removal")
    log = fresh_lab.layout.log_path("node03", "chainfire").read_text()
    assert "removed from the cluster" in log
    left = ",".join(fresh_lab.spec.client_endpoints()[:2])
    # if node03 led, the two left elect a leader first: a put sent meanwhile fails (as on
    # etcd, "request timed out, possibly due to previous leader failure") and is retried
    put = etcdctl(fresh_lab, "put", "after", "removal", endpoints=left)
    while put.returncode != 0 and time.monotonic() - started < 30:
        assert "leader" in put.stderr or "timed out" in put.stderr, put.stderr
        time.sleep(0.2)
        put = etcdctl(fresh_lab, "put", "after", "removal", endpoints=left)
    assert put.returncode == 0, put.stderr
    print(f"the two left accepted a put {time.monotonic() - started:.1f} s after the removal")
    listed = json.loads(etcdctl(fresh_lab, "member", "list", "-w", "json", endpoints=left).stdout)
    assert sorted(m["name"] for m in listed["members"]) == ["node01", "node02"]
