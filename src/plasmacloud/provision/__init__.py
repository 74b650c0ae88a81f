"""Provisioning: cluster spec, PKI, renderers, preflight, netboot, first-boot agent, deploy."""
