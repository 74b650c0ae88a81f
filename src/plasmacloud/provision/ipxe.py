"""iPXE scripts: the chain-loader every machine fetches, one script per known MAC, and
the refusal unknown machines get (templates/ipxe-*.ipxe.j2). Used by ``plasma render``
and the netboot server."""

from __future__ import annotations

from plasmacloud.provision.spec import ClusterSpec, NodeSpec
from plasmacloud.provision.templating import render_template

BOOT_SCRIPT = "boot.ipxe"


def base_url(spec: ClusterSpec) -> str:
    """HTTP root of the netboot server as the nodes reach it."""
    return f"http://{spec.netboot.server_ip}:{spec.netboot.http_port}"


def chain_script(spec: ClusterSpec) -> str:
    """``boot.ipxe``: fetch this machine's own script by MAC (``${mac:hexhyp}``)."""
    return render_template("ipxe-chain.ipxe.j2", spec=spec, url=base_url(spec))


def kernel_args(spec: ClusterSpec, node: NodeSpec, extra: str = "") -> str:
    """Kernel command line telling the first-boot agent who it is and where to report."""
    args = [
        f"plasmacloud.node={node.node_id}",
        f"plasmacloud.server={base_url(spec)}",
        f"plasmacloud.mac={node.mac}",
        "console=ttyS0,115200",
        "console=tty0",
    ]
    if extra.strip():
        args.append(extra.strip())
    return " ".join(args)


def node_script(spec: ClusterSpec, node: NodeSpec, extra_args: str = "") -> str:
    """The per-MAC script: kernel + initrd of the install image for this node."""
    return render_template(
        "ipxe-node.ipxe.j2",
        spec=spec,
        node=node,
        url=f"{base_url(spec)}/boot/{node.node_id}",
        kernel_args=kernel_args(spec, node, extra_args),
    )


def unknown_script(mac: str) -> str:
    """What a machine not in the spec gets: a clear refusal, then it stops."""
    return render_template("ipxe-unknown.ipxe.j2", mac=mac)


def script_name(node: NodeSpec) -> str:
    """File name of the node's script, as ``${mac:hexhyp}.ipxe`` asks for it."""
    return f"{node.mac_hyphen}.ipxe"
