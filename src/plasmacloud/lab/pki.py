"""The lab's certificates: a CA, one cert per node (SANs: id + 127.0.0.x), an operator cert."""

from __future__ import annotations

from plasmacloud.lab.layout import OPERATOR_NAME, LabLayout
from plasmacloud.lab.spec import LabSpec
from plasmacloud.provision import pki


def ensure_lab_pki(layout: LabLayout, spec: LabSpec, force: bool = False) -> None:
    """Create or refresh the lab PKI; valid existing files are kept (idempotent) unless
    ``force`` (every certificate reissued: a rotation, or a CA rollover's promote)."""
    ca = pki.init_ca(layout.pki_dir, common_name=f"{spec.cluster_name} CA")
    for node_id in spec.node_ids:
        # Loopback peers dial from 127.0.0.1 whatever address they listen on, and etcd
        # (the reference) matches a peer's source address against its cert's SANs,
        # falling back to DNS lookups of the names; listing 127.0.0.1 keeps that local.
        ips = [str(spec.ip_of(node_id)), "127.0.0.1"]
        pki.issue_node(ca, layout.pki_dir, node_id, [node_id], ips, force=force)
    pki.issue_client(ca, layout.pki_dir, OPERATOR_NAME, force=force)
    pki.init_sealing_key(layout.pki_dir)
