"""The chaos runner's pieces that need no cluster: fault parsing, key rotation, recovery."""

from __future__ import annotations

import dataclasses
import random
import shlex
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.chaos.history import Op
from plasmacloud.chaos.run import (
    ChaosConfig,
    Fault,
    default_faults,
    next_acks,
    parse_faults,
    run_chaos,
)
from plasmacloud.chaos.workload import Budget, KeyRotation
from plasmacloud.cli import app
from plasmacloud.cluster.control import ClusterError
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import netns_spec
from plasmacloud.lab.qemu import QemuBackend, prepare_tree
from plasmacloud.lab.qemu_target import qemu_target
from plasmacloud.lab.spec import LabSpec
from plasmacloud.lab.ssh import SSHBackend
from plasmacloud.lab.target import lab_target
from plasmacloud.provision.image import VM_NODE_CTL, init_script


def test_faults_offered_and_accepted_per_backend(tmp_path: Path) -> None:
    process = lab_target(Lab.open(tmp_path / "p", LabSpec()))
    netns = lab_target(Lab.open(tmp_path / "n", netns_spec(), backend="netns"))
    assert default_faults(process) == "kill,restart,pause"
    assert default_faults(netns) == "kill,restart,pause,partition"
    assert parse_faults("kill, pause", process) == ("kill", "pause")
    with pytest.raises(ClusterError, match="need the netns backend"):
        parse_faults("kill,partition", process)
    with pytest.raises(ClusterError, match="unknown faults"):
        parse_faults("kill,meteor", netns)
    with pytest.raises(ClusterError, match="power faults need VMs"):
        parse_faults("power", netns)


async def test_a_target_without_node_control_is_refused_before_any_fault(
    tmp_path: Path,
) -> None:
    # nothing is dialled: the run stops at the missing control, before the ready wait
    looked_at = dataclasses.replace(lab_target(Lab.open(tmp_path / "p", LabSpec())), control=None)
    with pytest.raises(ClusterError, match="chaos needs control of the nodes"):
        await run_chaos(looked_at, ChaosConfig(duration_s=1), tmp_path / "history.jsonl")
    assert not (tmp_path / "history.jsonl").exists()


def test_qemu_lab_target_cuts_power_by_request_and_drives_vm_units_over_ssh(
    tmp_path: Path,
) -> None:
    lab = QemuBackend(tmp_path / "lab", ssh=False)
    lab.paths.root.mkdir()
    prepare_tree(lab.paths, lab.names.tap)
    target = qemu_target(lab)
    assert target.name == "qemu" and target.power is lab
    assert default_faults(target) == "kill,restart,pause"  # power cuts take minutes: opt-in
    assert parse_faults("power,kill", target) == ("power", "kill")
    with pytest.raises(ClusterError, match="need the netns backend; the qemu lab has power cuts"):
        parse_faults("partition", target)
    assert target.recover_timeout_s > 60
    # Each VM at its lab address with the lab's key; its units through the image's node_ctl.
    ssh = target.control
    assert isinstance(ssh, SSHBackend)
    node01 = ssh.options.argv(ssh.targets["node01"])
    assert node01[-1] == "root@192.168.100.11" and "StrictHostKeyChecking=no" in node01
    assert node01[node01.index("-i") + 1] == str(lab.paths.ssh_key)
    assert ssh.manager.stop(ssh.units) == [
        *VM_NODE_CTL,
        "stop",
        "plasmacloud-chainfire",
        "plasmacloud-flaredb",
        "plasmacloud-iam",
    ]
    assert shlex.join(VM_NODE_CTL) in init_script()  # the init starts them the same way


def test_cli_refuses_partitions_on_the_process_backend(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec()).prepare()
    result = CliRunner().invoke(
        app, ["lab", "chaos", "--dir", str(tmp_path), "--faults", "partition"]
    )
    assert result.exit_code == EXIT_USAGE
    assert "netns" in " ".join(result.output.split())


def test_key_rotation_bounds_ops_per_key() -> None:
    keys = KeyRotation("/p", slots=2, ops_per_key=5)
    rng = random.Random(1)
    picked = [keys.pick(rng) for _ in range(100)]
    counts = {k: picked.count(k) for k in set(picked)}
    assert max(counts.values()) == 5
    assert len(counts) >= 100 // 5
    assert all(k.startswith("/p/reg/") for k in counts)


def _write(service_key: str, t0: float, t1: float | None, outcome: str = "ok") -> Op:
    return Op.model_validate(
        {"process": 0, "kind": "add", "key": service_key, "value": f"{t0}", "invoke": t0,
         "complete": t1, "outcome": outcome}
    )  # fmt: skip


def test_recovery_is_the_next_acknowledged_write_per_service() -> None:
    fault = Fault(kind="kill", targets=["node01"], start=10.0)
    ops = [
        _write("/chaos/set", 9.0, 10.5),  # in flight before the fault: does not count
        _write("/chaos/set", 10.1, None, "unknown"),
        _write("/chaos/set", 11.0, 12.25),
        _write("/chaos/set", 11.5, 12.0),
        _write("flaredb:t", 10.2, 10.3),
    ]
    next_acks([fault], ops)
    assert fault.recovery_s == {"chainfire": 2.0, "flaredb": pytest.approx(0.3)}
    never = Fault(kind="pause", targets=["node02"], start=20.0)
    next_acks([never], ops)
    assert never.recovery_s == {"chainfire": None, "flaredb": None}


def test_budget_stops_at_the_op_count_the_deadline_and_never_past_the_hard_bound() -> None:
    now = time.monotonic()
    counted = Budget(now + 60, 3, now + 60)
    assert [counted.take() for _ in range(5)] == [True, True, True, False, False]
    assert not Budget(now - 1, 10, now + 60).take()  # past the deadline
    extended = Budget(now - 1, 10, now + 60)
    extended.deadline = now + 120  # the nemesis moved it while recovering...
    assert extended.take()
    extended.hard_deadline = now - 1  # ...but the hard bound always wins
    assert not extended.take()
