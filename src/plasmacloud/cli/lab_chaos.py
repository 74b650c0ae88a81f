"""`plasma lab partition|heal|chaos`: network faults and fault runs on a running lab.

Registered on the ``lab`` command group by ``plasmacloud.cli.lab``; the run, its
report and ``--replay`` are shared with :func:`chaos_spec`, the top-level
``plasma chaos --spec cluster.yaml`` against real machines over SSH.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from plasmacloud.cli import lab_qemu, lab_run
from plasmacloud.cli._common import DirOpt, JsonOpt, NodeArg, call, console, err, fail, open_any_lab
from plasmacloud.cli.validate import (
    DEFAULT_SERVICES,
    CaOpt,
    CertOpt,
    IdentityOpt,
    KeyOpt,
    KnownHostsOpt,
    OutOpt,
    ServicesOpt,
    SpecOpt,
    ssh_spec_target,
)
from plasmacloud.cluster.control import ClusterError
from plasmacloud.common import durations
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab.qemu_layout import qemu_lab_dir

if TYPE_CHECKING:
    from plasmacloud.chaos.history import History, Verdict
    from plasmacloud.chaos.run import ChaosConfig, Fault
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.lab.surface import LabSurface


def _node_list(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _print_cuts(cut: dict[str, list[str]]) -> None:
    if not cut:
        console.print("no partitions: every node reaches every other")
    for node, peers in cut.items():
        console.print(f"{node} cannot reach {', '.join(peers)}")


def partition(
    node: NodeArg,
    from_nodes: Annotated[str, typer.Option("--from", help="comma-separated nodes to cut off")],
    lab_dir: DirOpt = None,
) -> None:
    """Cut NODE off from the given nodes (both directions; the host still reaches all)."""
    lab = open_any_lab(lab_dir)
    _print_cuts(call(lab.partition, node, _node_list(from_nodes)))


def heal(lab_dir: DirOpt = None) -> None:
    """Remove every partition."""
    lab = open_any_lab(lab_dir)
    _print_cuts(call(lab.heal))


def parse_duration(text: str) -> float:
    """``60s``, ``2m``, ``90`` -> seconds (a usage error otherwise)."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _verdict_table(verdicts: list[Verdict]) -> Table:
    table = Table(title="history check", show_lines=True)
    for col in ("property", "verdict", "checked", "evidence"):
        table.add_column(col, overflow="fold")
    style = {"ok": "[green]verified[/green]", "violation": "[red]VIOLATED[/red]"}
    for v in verdicts:
        evidence = "\n".join(v.details[:8]) + (" ..." if len(v.details) > 8 else "")
        table.add_row(
            v.property, style.get(v.status, "[yellow]unknown[/yellow]"), str(v.checked), evidence
        )
    return table


def _fault_table(faults: list[Fault]) -> Table:
    table = Table(title="faults and recovery")
    for col in ("at", "fault", "targets", "healed", "next ack after the fault", "healthy again"):
        table.add_column(col)
    for f in faults:
        rec = ", ".join(
            f"{svc} {t:.2f}s" if t is not None else f"{svc} [red]none[/red]"
            for svc, t in f.recovery_s.items()
        )
        table.add_row(
            f"{f.start:.1f}s",
            f"{f.kind} ({f.note})",
            ", ".join(f.targets),
            f"{f.healed:.1f}s" if f.healed is not None else "-",
            rec,
            f"{f.ready:.1f}s" if f.ready is not None else "[red]no[/red]",
        )
    return table


def _counts(history: History) -> str:
    by: dict[str, int] = {}
    for op in history.ops:
        by[f"{op.kind}/{op.outcome}"] = by.get(f"{op.kind}/{op.outcome}", 0) + 1
    ops = ", ".join(f"{k} {n}" for k, n in sorted(by.items()))
    return f"{len(history.ops)} ops ({ops}); {len(history.events)} watch events"


def _verdict_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [v.model_dump() for v in verdicts]


FaultsOpt = Annotated[
    str | None,
    typer.Option(
        help="kill,restart,pause,partition,power,replace (default: all the backend supports "
        "but power and replace; partition needs netns, power the qemu lab: minutes per cut; "
        "replace removes a node and adds it back empty, process and netns labs)"
    ),
]
DurationOpt = Annotated[str, typer.Option(help="how long the workload runs: 60s, 2m")]
SeedOpt = Annotated[int | None, typer.Option(help="random seed (default: time-based)")]
HistoryOpt = Annotated[Path | None, typer.Option(help="where to save the history (JSON lines)")]
ReplayOpt = Annotated[Path | None, typer.Option(help="re-check a saved history instead of running")]


def replay_history(replay: Path, as_json: bool) -> typer.Exit:
    """Re-check a saved history; the exit to raise (1 on any violation)."""
    from plasmacloud.chaos.history import load_history
    from plasmacloud.chaos.history_check import check_history, passed

    try:
        saved = load_history(replay)
    except (OSError, ValueError) as exc:
        return fail(exc, EXIT_USAGE)
    verdicts = check_history(saved)
    if as_json:
        typer.echo(json.dumps({"history": str(replay), "verdicts": _verdict_json(verdicts)}))
    else:
        console.print(f"{replay}: {_counts(saved)}; meta {saved.meta}")
        console.print(_verdict_table(verdicts))
    return typer.Exit(EXIT_OK if passed(verdicts) else EXIT_FAILURE)


def chaos_config(
    target: ClusterTarget, duration: str, faults: str | None, seed: int
) -> ChaosConfig:
    """The run's config from the options; ClusterError for faults the target cannot inject."""
    from plasmacloud.chaos.run import ChaosConfig, default_faults, parse_faults

    return ChaosConfig(
        duration_s=parse_duration(duration),
        faults=parse_faults(faults or default_faults(target), target),
        seed=seed,
        recover_timeout_s=target.recover_timeout_s,
    )


def run_and_report(
    target: ClusterTarget, cfg: ChaosConfig, path: Path, as_json: bool, replay_cmd: str
) -> typer.Exit:
    """Run chaos, print faults, verdicts and problems; the exit to raise (0 only if
    every property is verified and the run itself had no problem, 3 if the cluster
    was not reachable or healthy to begin with)."""
    import asyncio

    from plasmacloud.chaos.history_check import passed
    from plasmacloud.chaos.run import run_chaos

    say = (lambda _m: None) if as_json else console.print
    say(
        f"chaos ({target.name}): seed {cfg.seed}, {cfg.duration_s:.0f}s, "
        f"faults {', '.join(cfg.faults)}"
    )
    try:
        result = asyncio.run(run_chaos(target, cfg, path, say))
    except (ClusterError, ConnectionError) as exc:
        return fail(exc, EXIT_UNAVAILABLE)
    ok = passed(result.verdicts) and not result.problems
    if as_json:
        doc = {
            "seed": cfg.seed,
            "backend": target.name,
            "history": str(path),
            "ok": ok,
            "verdicts": _verdict_json(result.verdicts),
            "faults": [asdict(f) | {"recovery_s": f.recovery_s} for f in result.faults],
            "problems": result.problems,
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        console.print(_fault_table(result.faults))
        console.print(_verdict_table(result.verdicts))
        console.print(_counts(result.history))
        for p in result.problems:
            console.print(f"[red]problem:[/red] {p}")
        console.print(f"history saved: {path} (re-check: {replay_cmd} --replay {path})")
        console.print("[green]every property verified[/green]" if ok else "[red]FAILED[/red]")
    return typer.Exit(EXIT_OK if ok else EXIT_FAILURE)


def preflight(problems: list[str]) -> bool:
    """True if nothing stops a run before it starts; else says what does."""
    for p in problems:
        err.print(f"[red]error:[/red] {p}")
    return not problems


def time_seed(seed: int | None) -> int:
    """``seed``, or one from the clock (printed with the run, so it can be repeated)."""
    return seed if seed is not None else int(time.time()) % 1_000_000


def chaos(
    lab_dir: DirOpt = None,
    duration: DurationOpt = "60s",
    faults: FaultsOpt = None,
    seed: SeedOpt = None,
    history: HistoryOpt = None,
    replay: ReplayOpt = None,
    as_json: JsonOpt = False,
    inside: lab_run.InsideOpt = False,
) -> None:
    """Inject faults while recorded clients work; check the history (non-zero on violation).
    A qemu lab runs it inside the lab namespace: services over SSH, power cuts via QMP."""
    if replay is not None:
        raise replay_history(replay, as_json)
    lab = open_any_lab(lab_dir, inside=inside)
    raise typer.Exit(lab_chaos(lab, duration, faults, time_seed(seed), history, as_json))


def lab_chaos(
    lab: LabSurface,
    duration: str,
    faults: str | None,
    seed: int,
    history: Path | None,
    as_json: bool,
) -> int:
    """A chaos run against the lab, where its addresses exist; the exit code."""
    args = ["--duration", duration, "--seed", str(seed)]
    args += ["--faults", faults] if faults else []
    args += ["--history", str(history.resolve())] if history else []
    args += ["--json"] if as_json else []
    rc = lab_run.relayed(lab, ["lab", "chaos", *args])
    if rc is not None:
        return rc
    target = call(lab.target)
    try:
        cfg = chaos_config(target, duration, faults, seed)
    except ClusterError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    if not preflight(lab.chaos_preflight(target)):
        return EXIT_UNAVAILABLE
    path = history or lab.root / "chaos" / f"history-{seed}.jsonl"
    return run_and_report(target, cfg, path, as_json, "plasma lab chaos").exit_code


def chaos_spec(
    spec: SpecOpt = Path("cluster.yaml"),
    out: OutOpt = Path("out"),
    cacert: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    services: ServicesOpt = DEFAULT_SERVICES,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    duration: DurationOpt = "60s",
    faults: Annotated[
        str | None,
        typer.Option(help="kill,restart,pause (default: all three; partition is refused)"),
    ] = None,
    seed: SeedOpt = None,
    history: HistoryOpt = None,
    replay: ReplayOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Chaos against the spec's control-plane nodes: kill -9, restart and SIGSTOP their
    plasmacloud-* units over SSH (systemctl) while recorded clients work at the spec's
    addresses; check the history (non-zero on violation, 3 if a node does not answer)."""
    from plasmacloud.lab.ssh_target import ssh_preflight
    from plasmacloud.provision.spec import SpecError

    if replay is not None:
        raise replay_history(replay, as_json)
    try:
        target = ssh_spec_target(spec, out, services, (cacert, cert, key), identity, known_hosts)
    except (SpecError, KeyError, FileNotFoundError) as exc:
        raise fail(exc, EXIT_USAGE) from exc
    run_seed = time_seed(seed)
    try:
        cfg = chaos_config(target, duration, faults, run_seed)
    except ClusterError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    if not preflight(ssh_preflight(target)):
        raise typer.Exit(EXIT_UNAVAILABLE)
    path = history or out / "chaos" / f"history-{run_seed}.jsonl"
    raise run_and_report(target, cfg, path, as_json, "plasma chaos")


def qemu_chaos_cmd(
    path: lab_qemu.DirOpt = None,
    duration: DurationOpt = "60s",
    faults: FaultsOpt = None,
    seed: SeedOpt = None,
    history: HistoryOpt = None,
    as_json: JsonOpt = False,
    inside: lab_run.InsideOpt = False,
) -> None:
    """Faults against the VMs (service kill/restart/pause over SSH, power cuts through
    QMP) while recorded clients work inside the lab namespace; check the history."""
    lab = open_any_lab(qemu_lab_dir(path), "qemu", inside=inside)
    raise typer.Exit(lab_chaos(lab, duration, faults, time_seed(seed), history, as_json))
