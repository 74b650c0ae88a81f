"""The lab's services are the cluster's services plus how the lab starts them."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.cluster import services as cluster_services
from plasmacloud.lab.layout import LabLayout
from plasmacloud.lab.services import SERVICES
from plasmacloud.lab.spec import LabSpec


def test_lab_services_keep_the_cluster_endpoints_and_add_an_argv(tmp_path: Path) -> None:
    layout, spec = LabLayout(tmp_path), LabSpec()
    cfg = layout.node_config(spec, "node01")
    assert [s.name for s in SERVICES] == [s.name for s in cluster_services.SERVICES]
    for lab_svc, svc in zip(SERVICES, cluster_services.SERVICES, strict=True):
        assert lab_svc.health_url(cfg) == svc.health_url(cfg)
        assert svc.metrics_url is not None and lab_svc.metrics_url is not None
        assert lab_svc.metrics_url(cfg) == svc.metrics_url(cfg)
        argv = lab_svc.argv(layout.config_path("node01"), cfg, "plasma")
        assert argv[1:4] == [svc.name, "serve", "--config"], argv
    # with TLS (the lab's default) Chainfire and FlareDB are started with auth on
    chainfire = SERVICES[0].argv(layout.config_path("node01"), cfg, "plasma")
    assert spec.tls and "--iam-url" in chainfire
