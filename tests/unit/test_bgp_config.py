"""bgp.config: every setting reaches BIRD's configuration; hostile values never do.

BIRD's own parser checks the rendered files (`bird -p`) where bird2 is installed (`make test`
installs it, deploy/bird.sh); the rest needs no BIRD.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgp.config import protocol_name, render
from common import bgp
from common.bgp import BgpPeer, BgpSettings
from common.settings import BadSetting

BIRD = shutil.which("bird", path="/usr/sbin:/usr/bin")
needs_bird = pytest.mark.skipif(BIRD is None, reason="bird2 not installed (deploy/bird.sh)")


def peer(address: str, asn: int) -> BgpPeer:
    return BgpPeer(ipaddress.ip_address(address), asn)


MINIMAL = BgpSettings(asn=65000, peers=(peer("192.0.2.2", 65001),))
FULL = BgpSettings(
    asn=4200000001,
    peers=(peer("192.0.2.2", 65001), peer("2001:db8::2", 4200000000)),
    router_id=ipaddress.IPv4Address("192.0.2.1"),
    hold_time=9,
    password="s3cr#t!/*;}",
    communities=((65000, 100), (0, 65535)),
    import_routes="all",
    multihop=3,
)


def block(text: str, header: str) -> str:
    """The `header { ... }` block of a rendered file, up to its closing brace at column 0."""
    start = text.index(header + " {")
    return text[start : text.index("\n}\n", start) + 2]


def bird_parses(text: str, tmp_path) -> subprocess.CompletedProcess[str]:
    assert BIRD is not None
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    return subprocess.run(
        [BIRD, "-p", "-c", str(conf)], capture_output=True, text=True, timeout=10, check=False
    )


def test_every_setting_reaches_the_config():
    text = render(FULL, "node-1")
    assert "router id 192.0.2.1;" in text
    v4 = block(text, "protocol bgp peer_192_0_2_2")
    v6 = block(text, "protocol bgp peer_2001_db8__2")
    for session, address, asn in ((v4, "192.0.2.2", 65001), (v6, "2001:db8::2", 4200000000)):
        assert "local as 4200000001;" in session
        assert f"neighbor {address} as {asn};" in session
        assert "hold time 9;" in session and "keepalive time 3;" in session
        assert 'password "s3cr#t!/*;}";' in session
        assert "multihop 3;" in session
        assert "import all;" in session
        assert "bgp_community.add((65000, 100));" in session
        assert "bgp_community.add((0, 65535));" in session
        assert f'description "routed node-1: peer {address} AS {asn}";' in session
    assert "ipv4 {" in v4 and "ipv6" not in v4
    assert "ipv6 {" in v6 and "ipv4" not in v6
    # With import all, the kernel protocols install the peers' routes.
    for kernel in ("kernel4", "kernel6"):
        kernel_block = block(text, f"protocol kernel {kernel}")
        assert "export where source = RTS_BGP && dest = RTD_UNICAST;" in kernel_block


def test_defaults_announce_only_and_leave_the_rest_to_bird():
    text = render(MINIMAL, "n")
    session = block(text, "protocol bgp peer_192_0_2_2")
    assert "router id" not in text
    assert "hold time 90;" in session and "keepalive time 30;" in session
    assert "import none;" in session
    for absent in ("password", "multihop", "bgp_community"):
        assert absent not in session
    for kernel in ("kernel4", "kernel6"):
        assert "export none;" in block(text, f"protocol kernel {kernel}")


def test_only_routed_unreachable_routes_are_learned_and_exported():
    text = render(FULL, "n")
    assert "krt_source = 211 && dest = RTD_UNREACHABLE" in block(
        text, "function routed_aggregate()"
    )
    for kernel in ("kernel4", "kernel6"):
        kernel_block = block(text, f"protocol kernel {kernel}")
        assert "learn;" in kernel_block
        assert "import where routed_aggregate();" in kernel_block
    for name in ("peer_192_0_2_2", "peer_2001_db8__2"):
        assert "if !routed_aggregate() then reject;" in block(text, f"protocol bgp {name}")


def test_the_shortest_hold_time_keeps_a_keepalive_of_a_second():
    text = render(BgpSettings(asn=65000, peers=MINIMAL.peers, hold_time=3), "n")
    assert "hold time 3;" in text and "keepalive time 1;" in text


def test_protocol_names_are_bird_symbols_and_unique_per_address():
    names = {
        protocol_name(peer(a, 1))
        for a in ("10.0.0.2", "10.0.2.0", "2001:db8::2", "2001:db8:0:2::", "::ffff:10.0.0.2")
    }
    assert len(names) == 5
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) for name in names)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROUTED_BGP_PASSWORD", 'x"; export all; #'),
        ("ROUTED_BGP_PASSWORD", "back\\slash"),
        ("ROUTED_BGP_PASSWORD", "new\nline"),
        ("ROUTED_BGP_ROUTER_ID", "1.2.3.4; export all"),
        ("ROUTED_BGP_PEERS", "10.0.0.1=65000; protocol static {}"),
        ("ROUTED_BGP_PEERS", "10.0.0.1 as 1; }=65000"),
        ("ROUTED_BGP_COMMUNITIES", "1:2)); accept; ((3:4"),
        ("ROUTED_BGP_HOLD_TIME", "9; import all"),
        ("ROUTED_BGP_MULTIHOP", "2 } protocol x {"),
        ("ROUTED_BGP_ASN", "65000; router id 1.1.1.1"),
        ("ROUTED_BGP_IMPORT", "all; export all"),
    ],
)
def test_hostile_values_are_refused_before_any_rendering(tmp_path, name, value):
    env = {
        "ROUTED_ENV_FILE": str(tmp_path / "none"),
        "ROUTED_BGP_ASN": "65000",
        "ROUTED_BGP_PEERS": "10.0.0.1=65001",
        name: value,
    }
    with pytest.raises(BadSetting, match=name):
        bgp.load(env, "routed-bgp")


@needs_bird
@pytest.mark.parametrize("settings_", [MINIMAL, FULL], ids=["minimal", "full"])
def test_bird_parses_the_rendered_config(tmp_path, settings_):
    done = bird_parses(render(settings_, "node-1"), tmp_path)
    assert done.returncode == 0, done.stderr


@needs_bird
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=st.from_regex(bgp._PASSWORD, fullmatch=True))  # what common.bgp accepts
def test_any_accepted_password_stays_one_bird_string(tmp_path, password):
    """BIRD reads back exactly one `password` statement, whatever common.bgp lets through."""
    text = render(BgpSettings(asn=65000, peers=MINIMAL.peers, password=password), "n")
    done = bird_parses(text, tmp_path)
    assert done.returncode == 0, (password, done.stderr)
