"""``plasma dashboard``: a read-only web UI of a running cluster and its provisioning.

It reads through the same layers the CLI does (``cluster`` probes, the provisioning state
file, saved chaos histories, certificate files) and serves them as pages and JSON to a
browser that logged in with the one-time URL the command printed. Static assets are
package data: the machines it runs on are offline.
"""
