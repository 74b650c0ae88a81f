"""PlasmaCloud: a small private-cloud control plane and its bare-metal provisioning toolchain."""

__version__ = "0.1.0"
