"""Growing and shrinking a running lab: ``plasma lab add-node`` / ``remove-node``.

The lab does what provisioning does for real machines, then hands the membership change
to the cluster layer (:mod:`plasmacloud.cluster.membership`), the same code
``plasma cluster remove-node`` runs:

* add: the spec gains the node (the next number, or a removed one's name to replace it),
  marked joined so its config says ``bootstrap: false`` now and after any restart; the
  CA issues its certificate, every node's config is rendered again (the running members
  re-read theirs), its data directory starts empty; then it is added to Chainfire,
  started, and joined to FlareDB.
* remove: the node is taken out of all three services and stopped; then the spec drops
  it, the others' configs are rendered without it (so ``plasma lab env`` and ``plasma
  lab status`` name only the remaining members) and its directory is deleted.
"""

from __future__ import annotations

import shutil

from plasmacloud.cluster.membership import Change, Progress, add_node, members_ready, remove_node
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsBackend, create_network
from plasmacloud.lab.spec import LabSpec

# the backends whose nodes the lab starts itself (qemu VMs PXE-boot through provisioning)
MEMBER_BACKENDS = ("process", "netns")


def _check(lab: Lab) -> None:
    if lab.state.backend not in MEMBER_BACKENDS:
        raise LabError(
            f"add-node and remove-node run on the {' and '.join(MEMBER_BACKENDS)} backends; "
            f"this lab runs {lab.state.backend}"
        )
    if not lab.running():
        raise LabError(f"the lab in {lab.layout.root} is not running; `plasma lab up` first")


def _target(lab: Lab) -> ClusterTarget:
    """The lab as a membership change needs it: its nodes, TLS, services and backend."""
    return ClusterTarget(
        lab.state.backend, lab.configs(), lab.operator_tls, lab.services, control=lab.backend
    )


def next_node(spec: LabSpec) -> str:
    """The node an add-node without a name adds: the first removed one, else the next."""
    return spec.removed[0] if spec.removed else f"node{spec.node_count + 1:02d}"


def with_node(spec: LabSpec, node_id: str) -> LabSpec:
    """``spec`` with ``node_id`` (a removed one again, or the next number) as a joined
    member."""
    if node_id in spec.node_ids:
        raise LabError(f"{node_id} is a member already")
    count = spec.node_count
    if node_id not in spec.removed:
        if node_id != f"node{count + 1:02d}":
            raise LabError(f"the next new node is node{count + 1:02d}, not {node_id}")
        count += 1
    try:
        return LabSpec.model_validate(
            {
                **spec.model_dump(),
                "node_count": count,
                "removed": tuple(n for n in spec.removed if n != node_id),
                "joined": (*spec.joined, node_id),
            }
        )
    except ValueError as exc:
        raise LabError(f"cannot add {node_id}: {exc}") from exc


def without_node(spec: LabSpec, node_id: str) -> LabSpec:
    """``spec`` with ``node_id`` no longer a member."""
    return spec.model_copy(
        update={
            "removed": (*spec.removed, node_id),
            "joined": tuple(n for n in spec.joined if n != node_id),
        }
    )


async def add_lab_node(lab: Lab, progress: Progress, node_id: str | None = None) -> Change:
    """Add the next node (or ``node_id``: a removed one, to replace it) to a running lab."""
    _check(lab)
    node_id = node_id or next_node(lab.spec)
    spec = with_node(lab.spec, node_id)
    await members_ready(_target(lab), lab.configs())  # before anything changes
    lab.state.spec = spec
    # a replaced node's old data belongs to the member it was; the new one starts empty
    shutil.rmtree(lab.layout.node_dir(node_id), ignore_errors=True)
    progress(f"rendering {node_id}: certificate, cluster-config.json (bootstrap: false)")
    lab.prepare()
    backend = lab.backend
    if isinstance(backend, NetnsBackend):
        create_network(backend.names, lab.spec)  # adds the new node's namespace
    return await add_node(_target(lab), node_id, progress)


async def remove_lab_node(lab: Lab, node_id: str, progress: Progress) -> Change:
    """Take ``node_id`` out of a running lab: out of every service, stopped, out of the
    spec, and the others' configs rendered without it."""
    _check(lab)
    if node_id not in lab.spec.node_ids:
        raise LabError(f"no member {node_id} in this lab (members: {', '.join(lab.spec.node_ids)})")
    change = await remove_node(_target(lab), node_id, progress)
    lab.state.spec = without_node(lab.spec, node_id)
    lab.prepare()
    # as etcd's runbook says of a removed member's data dir: it must never start again
    shutil.rmtree(lab.layout.node_dir(node_id), ignore_errors=True)
    return change


def forget_lost(lab: Lab, survivor: str) -> list[str]:
    """After a quorum-loss recovery left ``survivor`` the only member: the lost members
    leave the lab (stopped if anything of theirs still runs, dropped from the spec, their
    data deleted), so no ``plasma lab start``/``up`` brings them back with the old
    membership, where two of them would form a second cluster; ``plasma lab add-node``
    grows the cluster back with new, empty members. Returns the nodes dropped."""
    lost = [n for n in lab.spec.node_ids if n != survivor]
    for node_id in lost:
        lab.backend.stop_node(node_id)
        lab.state.spec = without_node(lab.spec, node_id)
    lab.prepare()
    for node_id in lost:
        shutil.rmtree(lab.layout.node_dir(node_id), ignore_errors=True)
    return lost


async def replace_lab_node(lab: Lab, node_id: str, progress: Progress) -> None:
    """A replaced machine: remove-node, then add-node of the same node (empty data)."""
    await remove_lab_node(lab, node_id, progress)
    await add_lab_node(lab, progress, node_id)
