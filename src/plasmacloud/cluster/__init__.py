"""The client side of a running cluster: endpoints, credentials, probes, node control.

Nothing here knows how the nodes were started (the lab, real machines, VMs): callers
hand in a :class:`~plasmacloud.cluster.target.ClusterTarget`.
"""
