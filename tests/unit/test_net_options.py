import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import BadRequest
from netdriver.options import NetworkOptions, foreign_keys, parse_create, parse_generic


def test_defaults():
    assert parse_generic({}) == NetworkOptions(mtu=1500, masquerade=True, isolate=True)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"mtu": "1450"}, NetworkOptions(mtu=1450)),
        ({"com.docker.network.driver.mtu": "9000"}, NetworkOptions(mtu=9000)),
        ({"mtu": "68"}, NetworkOptions(mtu=68)),
        ({"mtu": "65535"}, NetworkOptions(mtu=65535)),
        ({"masquerade": "false"}, NetworkOptions(masquerade=False)),
        (
            {"com.docker.network.bridge.enable_ip_masquerade": "False"},
            NetworkOptions(masquerade=False),
        ),
        ({"isolate": "false"}, NetworkOptions(isolate=False)),
        ({"isolate": "0"}, NetworkOptions(isolate=False)),
        ({"isolate": "TRUE"}, NetworkOptions(isolate=True)),
        ({"mtu": "1400", "com.docker.network.driver.mtu": "1400"}, NetworkOptions(mtu=1400)),
    ],
)
def test_accepted_forms(given, expected):
    assert parse_generic(given) == expected


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"mtu": "67"}, "'mtu'"),
        ({"mtu": "65536"}, "'mtu'"),
        ({"mtu": "abc"}, "'mtu'"),
        ({"mtu": ""}, "'mtu'"),
        ({"mtu": "-1500"}, "'mtu'"),
        ({"mtu": "1e3"}, "'mtu'"),
        ({"com.docker.network.driver.mtu": "12"}, "'com.docker.network.driver.mtu'"),
        ({"masquerade": "maybe"}, "'masquerade'"),
        ({"isolate": "2"}, "'isolate'"),
        ({"mtu": 1500}, "'mtu'"),
        ({"isolate": True}, "'isolate'"),
    ],
)
def test_malformed_values_name_the_option(given, named):
    with pytest.raises(BadRequest) as err:
        parse_generic(given)
    assert named in str(err.value)


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(BadRequest) as err:
        parse_generic({"mut": "1400"})
    message = str(err.value)
    assert "'mut'" in message
    for name in ("mtu", "masquerade", "isolate", "com.docker.network.driver.mtu", "68..65535"):
        assert name in message
    assert "true or false" in message


def test_alias_with_a_different_value_is_refused():
    with pytest.raises(BadRequest, match="same option"):
        parse_generic({"mtu": "1400", "com.docker.network.driver.mtu": "1500"})


def test_create_options_read_dockerd_flags():
    parsed = parse_create(
        {
            "com.docker.network.enable_ipv6": False,
            "com.docker.network.internal": True,
            "com.docker.network.generic": {"mtu": "1450"},
            "com.docker.network.some_future_flag": "x",  # dockerd's, not the user's: ignored
        }
    )
    assert parsed.internal is True
    assert parsed.options.mtu == 1450


def test_create_options_tolerate_nulls():
    parsed = parse_create({"com.docker.network.generic": None})
    assert parsed.options == NetworkOptions()
    assert parsed.internal is False


def test_ipv6_and_ipv4_flags_are_read():
    parsed = parse_create(
        {"com.docker.network.enable_ipv6": True, "com.docker.network.generic": {}}
    )
    assert (parsed.ipv6, parsed.ipv4) == (True, True)  # 20.10 sends no enable_ipv4: IPv4 on
    parsed = parse_create({"com.docker.network.enable_ipv4": False})  # dockerd 26+ --ipv4=false
    assert (parsed.ipv6, parsed.ipv4) == (False, False)
    with pytest.raises(BadRequest, match="enable_ipv4"):
        parse_create({"com.docker.network.enable_ipv4": "no"})


@pytest.mark.parametrize(
    "bad", [{"com.docker.network.internal": "yes"}, {"com.docker.network.generic": []}]
)
def test_wrong_types_in_options(bad):
    with pytest.raises(BadRequest):
        parse_create(bad)


@given(st.integers(min_value=68, max_value=65535))
def test_every_valid_mtu_parses(mtu):
    assert parse_generic({"mtu": str(mtu)}).mtu == mtu


@given(st.text(max_size=12))
def test_mtu_text_is_either_valid_or_refused(text):
    stripped = text.strip()
    valid = stripped.isdigit() and stripped.isascii() and 68 <= int(stripped) <= 65535
    if valid:
        assert parse_generic({"mtu": text}).mtu == int(stripped)
    else:
        with pytest.raises(BadRequest):
            parse_generic({"mtu": text})


def test_only_keys_in_routed_namespace_are_judged():
    parsed = parse_generic(
        {
            "mtu": "1400",
            "com.docker.network.driver.private.no_proxy_6to4": "true",  # dockerd 28's own
            "com.docker.network.endpoint.name": "web",
            "org.example.tool": "whatever",
        }
    )
    assert parsed.mtu == 1400
    for own in ({"bogus": "1"}, {"routed.bogus": "1"}, {"com.docker.network.driver.mtu": "x"}):
        with pytest.raises(BadRequest):
            parse_generic(own)
    assert foreign_keys({"mtu": "1", "routed.x": "1", "com.docker.y": "1"}) == ["com.docker.y"]
