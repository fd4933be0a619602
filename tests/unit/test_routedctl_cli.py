"""routedctl's rendering and command line, with the collect layer faked (no root needed)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from routedctl import logic, render
from routedctl.__main__ import main
from routedctl.state import NeedsRoot, Probe, Snapshot
from tests.unit.test_routedctl_logic import (
    EP1,
    EP3,
    EP4,
    VETH1,
    VETH4,
    healthy_snapshot,
    v6_snapshot,
    with_host,
)

ROOT = lambda: 0  # noqa: E731
USER = lambda: 1000  # noqa: E731


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str], snap: Snapshot
) -> tuple[int, str, str]:
    code = main(argv, collector=lambda _paths: snap, geteuid=ROOT)
    out, err = capsys.readouterr()
    return code, out, err


def broken() -> Snapshot:
    snap = healthy_snapshot()
    return with_host(snap, routes=snap.host.routes[1:])


def ipam_down() -> Snapshot:
    snap = healthy_snapshot()
    down = Probe("routed-ipam", "/p/routed-ipam.sock", False, "no socket file")
    chan = Probe("channel", "ipc:///r/ipam.ipc", False, "no answer within 2 s")
    return dataclasses.replace(snap, services=(down, snap.services[1], chan), ipam=None)


# -- exit codes ------------------------------------------------------------------------------


def test_doctor_healthy_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["doctor"], healthy_snapshot())
    assert code == 0
    assert out.startswith("healthy")


def test_doctor_problem_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["doctor"], broken())
    assert code == 1
    assert "route-missing" in out and f"dev {VETH1}" in out


def test_doctor_reports_a_down_service(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["doctor"], ipam_down())
    assert code == 1
    assert "routed-ipam is not answering" in out and "Traceback" not in out


def test_status_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, ["status"], healthy_snapshot())[0] == 0
    code, out, _ = run(capsys, ["status"], ipam_down())
    assert code == 1
    assert "DOWN" in out and "not answering" in out


def test_not_root_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def must_not_collect(_paths: object) -> Snapshot:
        raise AssertionError("collected without root")

    code = main(["status"], collector=must_not_collect, geteuid=USER)
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("routedctl needs root: ")


@pytest.mark.parametrize("error", [NeedsRoot("cannot read /x"), PermissionError(13, "denied")])
def test_permission_error_while_collecting_exits_2(
    capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    def refuse(_paths: object) -> Snapshot:
        raise error

    code = main(["doctor"], collector=refuse, geteuid=ROOT)
    assert code == 2
    assert capsys.readouterr().err.startswith("routedctl needs root: ")


@pytest.mark.parametrize("argv", [[], ["bogus"], ["status", "--nope"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv, collector=lambda _p: healthy_snapshot(), geteuid=ROOT)
    assert exc.value.code == 2


def test_collector_sees_paths_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ROUTED_PLUGIN_DIR", str(tmp_path / "plugins"))
    monkeypatch.setenv("ROUTED_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("ROUTED_STATE_DIR", str(tmp_path / "state"))
    seen = []

    def collector(paths):
        seen.append(paths)
        return healthy_snapshot()

    assert main(["doctor", "--json"], collector=collector, geteuid=ROOT) == 0
    assert seen[0].plugin_socket("routed-net") == tmp_path / "plugins" / "routed-net.sock"
    assert seen[0].channel_endpoint == f"ipc://{tmp_path / 'run' / 'ipam.ipc'}"
    assert seen[0].store_file("routed-net") == tmp_path / "state" / "routed-net.db"


# -- rendering -------------------------------------------------------------------------------


def test_status_table(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, ["status"], broken())
    assert "SERVICES" in out and "POOLS (1)" in out and "LEASES (3)" in out
    assert "ENDPOINTS (2 in 1 networks)" in out
    pool_line = next(line for line in out.splitlines() if "100.64.0.0/16" in line)
    assert pool_line.split()[-3:] == ["3", "65536", "0.00%"]
    web = next(line for line in out.splitlines() if line.strip().startswith(EP1[:12]))
    assert "web" in web and VETH1 in web and web.split()[-2:] == ["MISSING", "-"]


def test_status_table_without_ipam(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, ["status"], ipam_down())
    assert "unknown: routed-ipam's channel is not answering" in out


def test_status_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["status", "--json"], healthy_snapshot())
    data = json.loads(out)
    assert code == 0 and data["healthy"] is True
    assert {s["name"] for s in data["services"]} == {"routed-ipam", "routed-net", "channel"}
    assert data["pools"][0]["allocated"] == 3 and data["pools"][0]["size"] == 65536
    assert [lease["holder"] for lease in data["leases"]] == ["(gateway)", "web", "db"]
    assert data["endpoints"][0]["container"] == "web" and data["endpoints"][0]["route"] is True


def test_status_json_without_ipam(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, ["status", "--json"], ipam_down())
    data = json.loads(out)
    assert data["pools"] is None and data["leases"] is None and data["healthy"] is False


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["doctor", "--json"], broken())
    data = json.loads(out)
    assert code == 1 and data["healthy"] is False
    assert data["findings"] == [
        {
            "severity": "problem",
            "code": "route-missing",
            "subject": EP1,
            "message": f"endpoint {EP1[:12]} (100.64.0.2, web): route 100.64.0.2/32 dev "
            f"{VETH1} is missing",
        }
    ]


def test_doctor_json_healthy(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, ["doctor", "--json"], healthy_snapshot())
    assert json.loads(out) == {"healthy": True, "findings": []}


def test_notes_do_not_fail_doctor() -> None:
    note = logic.Finding("note", "chain-unknown", "filter/X", "could not list")
    text = render.doctor_text([note])
    assert text.startswith("healthy") and "(1 note)" in text


def test_table_alignment() -> None:
    text = render.table(("A", "LONGER"), [("xxxx", "y"), ("z", "w")])
    lines = text.splitlines()
    assert lines[0] == "  A     LONGER"
    assert lines[1] == "  xxxx  y"


def test_ipv6_endpoints_in_status_and_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["doctor"], v6_snapshot())
    assert code == 0 and out.startswith("healthy")
    code, out, _ = run(capsys, ["status"], v6_snapshot())
    assert code == 0
    dual = next(line for line in out.splitlines() if line.strip().startswith(EP3[:12]))
    assert "100.65.0.2/32 fd00:100::2/128" in dual and dual.split()[-2:] == ["yes", "-"]
    six = next(line for line in out.splitlines() if line.strip().startswith(EP4[:12]))
    assert "fd00:200::2/128" in six and VETH4 in six and "six" in six
    code, out, _ = run(capsys, ["status", "--json"], v6_snapshot())
    row = json.loads(out)["endpoints"][1]
    assert (row["address"], row["address6"], row["route"]) == ("", "fd00:200::2/128", True)
