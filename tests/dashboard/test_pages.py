"""The provisioning, runs and PKI pages read their files right: node states with their
transitions, saved chaos histories re-checked (a stale read is a violation), saved
validation reports, certificates with their expiry and chain, preflight's findings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from plasmacloud.chaos.history import History, Op, save_history
from plasmacloud.dashboard.auth import Gate
from plasmacloud.dashboard.pki import pki_doc
from plasmacloud.dashboard.provisioning import provisioning_doc
from plasmacloud.dashboard.runs import Runs
from plasmacloud.dashboard.server import Sources
from plasmacloud.provision import pki
from plasmacloud.provision.findings import Finding, warning
from plasmacloud.provision.states import State, StateStore
from plasmacloud.validate.report import save_report
from plasmacloud.validate.results import CheckResult, NodeResult

from .conftest import absent_target, client_of


def test_provisioning_shows_each_node_walk_its_states(tmp_path: Path) -> None:
    state_file = tmp_path / "netboot-state.json"
    assert provisioning_doc(state_file) == {"found": False, "state_file": str(state_file)}
    store = StateStore(state_file, {"node01": "52:54:00:00:00:01", "node02": "52:54:00:00:00:02"})
    for to, step in ((State.BOOTING, None), (State.INSTALLING, "disk"), (State.INSTALLED, None)):
        store.transition("node01", to, step=step)
    store.transition("node02", State.BOOTING)
    store.transition("node02", State.FAILED, step="disk", message="no disk /dev/vda")
    doc = provisioning_doc(state_file)
    assert doc["found"]
    one, two = doc["nodes"]
    assert one["node_id"] == "node01" and one["state"] == "installed"
    assert [e["state"] for e in one["events"]] == ["booting", "installing", "installed"]
    times = [e["at"] for e in one["events"]]
    assert times == sorted(times) and one["updated_at"] == times[-1]
    assert two["state"] == "failed" and two["error"] == "no disk /dev/vda"
    assert two["last_step"] == "disk"


def _op(kind: str, invoke: float, complete: float, **kw: object) -> Op:
    return Op.model_validate(
        {"process": 0, "kind": kind, "key": "r/1", "invoke": invoke, "complete": complete}
        | {"outcome": "ok"}
        | kw
    )


async def test_runs_recheck_histories_and_read_reports(tmp_path: Path) -> None:
    assert (await Runs(tmp_path).get())["chaos"] == []
    good = History(
        meta={"seed": 1, "faults": ["kill"], "duration_s": 5.0},
        ops=[_op("write", 1, 2, value="a"), _op("read", 3, 4, result="a")],
    )
    stale = History(
        meta={"seed": 2, "faults": ["kill"], "duration_s": 5.0},
        ops=[_op("write", 1, 2, value="a"), _op("read", 3, 4, result=None)],
    )
    save_history(tmp_path / "chaos" / "history-1.jsonl", good)
    save_history(tmp_path / "chaos" / "history-2.jsonl", stale)
    ok = CheckResult("health", "every service healthy", [NodeResult("node01", True, "ok")])
    bad = CheckResult("chainfire.leader", "one leader", [NodeResult("node01", False, "none")])
    save_report([ok, bad], tmp_path)
    (tmp_path / "reports" / "junk.json").write_text("[1, 2]")

    doc = await Runs(tmp_path).get()
    runs = {r["meta"]["seed"]: r for r in doc["chaos"]}
    assert runs[1]["ok"] and runs[1]["ops"] == 2
    assert not runs[2]["ok"]
    (register,) = [v for v in runs[2]["verdicts"] if "linearizable" in v["property"]]
    assert register["status"] == "violation"
    reports = {Path(r["file"]).name: r for r in doc["validation"]}
    (saved,) = [r for n, r in reports.items() if n.startswith("validate-")]
    assert not saved["ok"] and saved["checks"] == 2 and saved["failed"] == ["chainfire.leader"]
    assert saved["results"][1] == {
        "id": "chainfire.leader",
        "ok": False,
        "nodes": {"node01": {"node": "node01", "ok": False, "evidence": "none"}},
    }
    assert (
        not reports["junk.json"]["ok"]
        and "not a validation report" in reports["junk.json"]["error"]
    )


def test_pki_lists_certificates_with_expiry_and_chain(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "pki")
    pki.issue_node(ca, tmp_path / "pki", "node01", ["node01"], ["10.0.0.11"])
    pki.issue_client(ca, tmp_path / "pki" / "clients", "admin", days=10)
    other = pki.init_ca(tmp_path / "other")
    pki.issue_node(other, tmp_path / "stray", "node02", ["node02"], [])
    (tmp_path / "stray" / "ca.crt").write_bytes((tmp_path / "pki" / "ca.crt").read_bytes())
    found = [warning("PF006-cert-expiring", "admin.crt expires in 9 day(s)", "rotate")]

    def findings() -> list[Finding]:
        return found

    doc = pki_doc([tmp_path / "pki", tmp_path / "stray"], findings)
    certs = {c["file"]: c for c in doc["certificates"]}
    # issue_client copied the CA beside its certificate: clients/ca.crt
    assert set(certs) == {
        "pki/ca.crt",
        "pki/node01.crt",
        "pki/clients/admin.crt",
        "pki/clients/ca.crt",
        "stray/ca.crt",
        "stray/node02.crt",
    }
    assert not any(name.endswith(".key") for name in certs)
    node = certs["pki/node01.crt"]
    assert node["status"] == "ok" and node["chains_to_ca"] and node["subject"] == "node01"
    assert node["sans"] == ["node01", "10.0.0.11"] and 363 <= node["days_left"] <= 365
    admin = certs["pki/clients/admin.crt"]
    assert admin["status"] == "expiring" and admin["chains_to_ca"]
    assert certs["stray/node02.crt"]["status"] == "untrusted"  # another CA signed it
    assert certs["pki/ca.crt"]["ca"] and certs["pki/ca.crt"]["chains_to_ca"] is None
    assert doc["certificates"][0]["file"] == "pki/clients/admin.crt"  # soonest expiry first
    assert doc["findings"] == [f.model_dump(mode="json") for f in found]
    expires = dt.datetime.fromisoformat(admin["not_after"])
    assert dt.timedelta(days=9) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=10)


@pytest.mark.parametrize("page", ["provisioning", "runs", "pki"])
async def test_each_page_and_its_json_need_the_session(tmp_path: Path, page: str) -> None:
    gate = Gate()
    sources = Sources(absent_target(), cert_dirs=(tmp_path,), runs_dir=tmp_path)
    async with client_of(sources, gate) as client:
        assert (await client.get(f"/api/{page}.json")).status == 401
        assert (await client.get("/login", params={"token": gate.token})).status == 200
        shell = await client.get(f"/{page}")
        assert shell.status == 200 and f'data-page="{page}"' in await shell.text()
        assert (await client.get(f"/api/{page}.json")).status == 200


async def test_saved_runs_are_served_and_nothing_else(tmp_path: Path) -> None:
    save_history(tmp_path / "chaos" / "history-7.jsonl", History(meta={"seed": 7}))
    report = save_report([], tmp_path)
    (tmp_path / "secret.jsonl").write_text("not to be served")
    gate = Gate()
    async with client_of(Sources(absent_target(), runs_dir=tmp_path), gate) as client:
        link = "/runs/chaos/history-7.jsonl"
        assert (await client.get(link)).status == 401  # no session yet
        await client.get("/login", params={"token": gate.token})
        doc = await (await client.get("/api/runs.json")).json()
        assert [r["link"] for r in doc["chaos"]] == [link]
        assert [r["link"] for r in doc["validation"]] == [f"/runs/reports/{report.name}"]
        for url, path in (
            (link, tmp_path / "chaos" / "history-7.jsonl"),
            (doc["validation"][0]["link"], report),
        ):
            resp = await client.get(url)
            assert resp.status == 200
            assert await resp.text() == path.read_text()
        for name in (
            "chaos/..%2Fsecret.jsonl",
            "chaos/%2E%2E%2Fsecret.jsonl",
            "chaos/history-8.jsonl",
            "reports/history-7.jsonl",  # a history is not a report
            "secret/secret.jsonl",
        ):
            assert (await client.get(f"/runs/{name}")).status == 404, name
