"""Chaos: recorded workloads against a running cluster while faults are injected, the
history they record, and the checkers that judge it (linearizable registers, sets,
watch streams). Works on a :class:`~plasmacloud.cluster.target.ClusterTarget`; nothing
here knows how the nodes were started."""
