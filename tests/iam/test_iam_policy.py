"""Policy parsing (errors name the field) and evaluation (table tests + properties)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasmacloud.iam.conditions import ContextValue
from plasmacloud.iam.policy import Policy, PolicyError, evaluate, parse_policy
from plasmacloud.iam.wildcard import any_of, covers_prefix, intersects_prefix, wildcard_match


def pol(*statements: dict[str, Any]) -> Policy:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


APP_RW = pol(
    {
        "Sid": "AppRW",
        "Effect": "Allow",
        "Action": ["chainfire:Range", "chainfire:Put"],
        "Resource": "key/app/*",
    }
)
DENY_SECRET = pol(
    {"Sid": "NoSecrets", "Effect": "Deny", "Action": "chainfire:*", "Resource": "key/app/secret*"}
)
ALL_BUT_DELETE = pol({"Effect": "Allow", "NotAction": "chainfire:DeleteRange", "Resource": "*"})
NOT_RESOURCE = pol({"Effect": "Allow", "Action": "flaredb:*", "NotResource": "db/admin"})
FROM_LOOPBACK = pol(
    {
        "Sid": "Loopback",
        "Effect": "Allow",
        "Action": "flaredb:Query",
        "Resource": "db/main",
        "Condition": {"IpAddress": {"plasma:SourceIp": "127.0.0.0/8"}},
    }
)
BEFORE_2030 = pol(
    {
        "Effect": "Allow",
        "Action": "flaredb:Execute",
        "Resource": "db/?ain",
        "Condition": {
            "DateLessThan": {"plasma:CurrentTime": "2030-01-01T00:00:00Z"},
            "StringLike": {"plasma:username": ["ali*", "bob"]},
            "Bool": {"plasma:SecureTransport": "true"},
        },
    }
)
NOT_ALICE = pol(
    {
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"StringNotEquals": {"plasma:username": "alice"}},
    }
)

NOW = datetime(2026, 11, 25, tzinfo=UTC)
CTX: dict[str, ContextValue] = {
    "plasma:SourceIp": "127.0.0.12",
    "plasma:CurrentTime": NOW,
    "plasma:username": "alice",
    "plasma:SecureTransport": True,
}


@pytest.mark.parametrize(
    ("policies", "action", "resource", "ctx", "allowed", "reason", "statement"),
    [
        ({}, "chainfire:Put", "key/app/x", CTX, False, "implicit-deny", None),
        ({"app": APP_RW}, "chainfire:Put", "key/app/x", CTX, True, "allowed", "AppRW"),
        ({"app": APP_RW}, "CHAINFIRE:put", "key/app/x", CTX, True, "allowed", "AppRW"),
        ({"app": APP_RW}, "chainfire:Put", "key/other/x", CTX, False, "implicit-deny", None),
        ({"app": APP_RW}, "chainfire:Put", "KEY/app/x", CTX, False, "implicit-deny", None),
        ({"app": APP_RW}, "chainfire:DeleteRange", "key/app/x", CTX, False, "implicit-deny", None),
        (
            {"app": APP_RW, "deny": DENY_SECRET},
            "chainfire:Put",
            "key/app/secret/1",
            CTX,
            False,
            "explicit-deny",
            "NoSecrets",
        ),
        (
            {"deny": DENY_SECRET, "app": APP_RW},
            "chainfire:Put",
            "key/app/public",
            CTX,
            True,
            "allowed",
            "AppRW",
        ),
        ({"p": ALL_BUT_DELETE}, "chainfire:Txn", "key/x", CTX, True, "allowed", "Statement[0]"),
        (
            {"p": ALL_BUT_DELETE},
            "chainfire:DeleteRange",
            "key/x",
            CTX,
            False,
            "implicit-deny",
            None,
        ),
        ({"p": NOT_RESOURCE}, "flaredb:Query", "db/main", CTX, True, "allowed", "Statement[0]"),
        ({"p": NOT_RESOURCE}, "flaredb:Query", "db/admin", CTX, False, "implicit-deny", None),
        ({"p": FROM_LOOPBACK}, "flaredb:Query", "db/main", CTX, True, "allowed", "Loopback"),
        (
            {"p": FROM_LOOPBACK},
            "flaredb:Query",
            "db/main",
            {**CTX, "plasma:SourceIp": "10.0.0.1"},
            False,
            "implicit-deny",
            None,
        ),
        ({"p": FROM_LOOPBACK}, "flaredb:Query", "db/main", {}, False, "implicit-deny", None),
        ({"p": BEFORE_2030}, "flaredb:Execute", "db/main", CTX, True, "allowed", "Statement[0]"),
        (
            {"p": BEFORE_2030},
            "flaredb:Execute",
            "db/main",
            {**CTX, "plasma:CurrentTime": "2031-01-01T00:00:00Z"},
            False,
            "implicit-deny",
            None,
        ),
        (
            {"p": BEFORE_2030},
            "flaredb:Execute",
            "db/main",
            {**CTX, "plasma:username": "carol"},
            False,
            "implicit-deny",
            None,
        ),
        (
            {"p": BEFORE_2030},
            "flaredb:Execute",
            "db/main",
            {**CTX, "plasma:SecureTransport": "false"},
            False,
            "implicit-deny",
            None,
        ),
        (
            {"p": BEFORE_2030},
            "flaredb:Execute",
            "db/mains",
            CTX,
            False,
            "implicit-deny",
            None,
        ),
        # StringNotEquals: a missing key makes a negated operator true -> deny applies
        (
            {"a": ALL_BUT_DELETE, "n": NOT_ALICE},
            "chainfire:Put",
            "key/x",
            {},
            False,
            "explicit-deny",
            "Statement[0]",
        ),
        (
            {"a": ALL_BUT_DELETE, "n": NOT_ALICE},
            "chainfire:Put",
            "key/x",
            {"plasma:username": "alice"},
            True,
            "allowed",
            "Statement[0]",
        ),
    ],
)
def test_evaluation_table(
    policies: dict[str, Policy],
    action: str,
    resource: str,
    ctx: dict[str, Any],
    allowed: bool,
    reason: str,
    statement: str | None,
) -> None:
    d = evaluate(policies, action, resource, ctx)
    assert (d.allowed, d.reason, d.statement) == (allowed, reason, statement)
    assert d.effect == ("Allow" if allowed else "Deny")


def test_decision_names_the_policy() -> None:
    d = evaluate({"app": APP_RW, "deny": DENY_SECRET}, "chainfire:Put", "key/app/secret")
    assert d.to_json() == {
        "decision": "Deny",
        "reason": "explicit-deny",
        "policy": "deny",
        "statement": "NoSecrets",
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "(document): must be a JSON object"),
        ({"Statement": []}, "Statement: must be a non-empty list"),
        ({"Version": "2020-01-01", "Statement": []}, "Version: must be one of"),
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "a:b", "Resource": "*"},
                    {"Effect": "Maybe", "Action": "a:b", "Resource": "*"},
                ]
            },
            'Statement[1].Effect: must be "Allow" or "Deny"',
        ),
        (
            {"Statement": [{"Effect": "Allow", "Resource": "*"}]},
            "Statement[0].Action: exactly one of Action or NotAction is required",
        ),
        (
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "a:b", "NotAction": "a:c", "Resource": "*"}
                ]
            },
            "Statement[0].Action: exactly one of Action or NotAction",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": ["a:b", "no colon"], "Resource": "*"}]},
            "Statement[0].Action[1]: 'no colon' is not an action",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": "a:b", "Resource": ""}]},
            "Statement[0].Resource: must be a non-empty string",
        ),
        (
            {"Statement": [{"Effect": "Allow", "Action": "a:b", "Resource": "*", "Extra": 1}]},
            "Statement[0].Extra: unknown field",
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "a:b",
                        "Resource": "*",
                        "Condition": {"IpAddress": {"plasma:SourceIp": "not-an-ip"}},
                    }
                ]
            },
            "Statement[0].Condition.IpAddress.plasma:SourceIp: 'not-an-ip' is not an IP",
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "a:b",
                        "Resource": "*",
                        "Condition": {"DateLessThan": {"plasma:CurrentTime": "tomorrow"}},
                    }
                ]
            },
            "DateLessThan.plasma:CurrentTime: 'tomorrow' is not an ISO 8601 date",
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "a:b",
                        "Resource": "*",
                        "Condition": {"StringSortOf": {"k": "v"}},
                    }
                ]
            },
            "Statement[0].Condition.StringSortOf: unknown operator",
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "a:b",
                        "Resource": "*",
                        "Condition": {"Bool": {"k": "maybe"}},
                    }
                ]
            },
            "Statement[0].Condition.Bool.k: 'maybe' is not a boolean",
        ),
        (
            {
                "Statement": [
                    {
                        "Sid": "'; DROP TABLE users;--",
                        "Effect": "Allow",
                        "Action": "a:b",
                        "Resource": "*",
                    }
                ]
            },
            "Statement[0].Sid: must be letters",
        ),
    ],
)
def test_malformed_policies_name_the_field(doc: Any, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(doc)
    assert message in str(exc.value)


def test_single_statement_object_and_string_values_are_accepted() -> None:
    p = parse_policy(
        {"Statement": {"Effect": "Allow", "Action": "flaredb:Query", "Resource": "db/x"}}
    )
    assert p.statements[0].actions == ("flaredb:Query",)
    assert evaluate({"p": p}, "flaredb:Query", "db/x").allowed


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(
            {"Statement": [{"Effect": "X"}, {"Effect": "Allow", "Action": 3, "Resource": "*"}]}
        )
    paths = [p for p, _ in exc.value.errors]
    assert "Statement[0].Effect" in paths
    assert "Statement[0].Action" in paths
    assert "Statement[1].Action" in paths


# -- properties ----------------------------------------------------------------------

_seg = st.sampled_from(["app", "other", "x", "secret", "db", "main"])
_resources = st.lists(_seg, min_size=1, max_size=3).map(lambda p: "key/" + "/".join(p))
_actions = st.sampled_from(
    [
        "chainfire:Range",
        "chainfire:Put",
        "chainfire:DeleteRange",
        "flaredb:Query",
        "flaredb:Execute",
    ]
)
_action_patterns = st.one_of(
    _actions, st.sampled_from(["*", "chainfire:*", "flaredb:*", "*:Put", "chainfire:?ut"])
)
_resource_patterns = st.one_of(
    _resources,
    _resources.map(lambda r: r + "*"),
    st.sampled_from(["*", "key/*", "key/app/*", "key/?pp/x"]),
)


@st.composite
def statements(draw: st.DrawFn, effect: str | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"Effect": effect or draw(st.sampled_from(["Allow", "Deny"]))}
    s["NotAction" if draw(st.booleans()) else "Action"] = draw(
        st.lists(_action_patterns, min_size=1, max_size=3)
    )
    s["NotResource" if draw(st.booleans()) else "Resource"] = draw(
        st.lists(_resource_patterns, min_size=1, max_size=3)
    )
    return s


_policy_sets = st.lists(st.lists(statements(), min_size=1, max_size=4), max_size=4).map(
    lambda ps: {f"p{i}": pol(*stmts) for i, stmts in enumerate(ps)}
)


@settings(max_examples=150, deadline=None)
@given(_policy_sets, statements(effect="Deny"), _actions, _resources)
def test_adding_a_deny_never_grants(
    policies: dict[str, Policy], deny: dict[str, Any], action: str, resource: str
) -> None:
    before = evaluate(policies, action, resource)
    after = evaluate({**policies, "extra-deny": pol(deny)}, action, resource)
    if not before.allowed:
        assert not after.allowed
    if pol(deny).statements[0].matches(action, resource, {}):
        assert after.reason == "explicit-deny"


@settings(max_examples=100, deadline=None)
@given(_policy_sets, _actions, _resources)
def test_deny_wins_whatever_the_order(
    policies: dict[str, Policy], action: str, resource: str
) -> None:
    forward = evaluate(policies, action, resource)
    backward = evaluate(dict(reversed(list(policies.items()))), action, resource)
    assert forward.allowed == backward.allowed
    assert (forward.reason == "explicit-deny") == (backward.reason == "explicit-deny")


@settings(deadline=None)
@given(_actions, _resources)
def test_no_policies_means_deny(action: str, resource: str) -> None:
    d = evaluate({}, action, resource)
    assert not d.allowed and d.reason == "implicit-deny"


# -- ranges of keys (etcd prefix requests) -----------------------------------------------

_alphabet = "ab/*?"
_patterns = st.text(alphabet=_alphabet, max_size=6)
_plain = st.text(alphabet="ab/", max_size=5)


@settings(max_examples=300, deadline=None)
@given(_patterns, _plain, st.lists(_plain, min_size=1, max_size=8))
def test_prefix_cover_and_intersection_are_sound(
    pattern: str, prefix: str, suffixes: list[str]
) -> None:
    matched = [wildcard_match(pattern, prefix + s) for s in suffixes]
    if covers_prefix(pattern, prefix):
        assert all(matched)
    if not intersects_prefix(pattern, prefix):
        assert not any(matched)


@pytest.mark.parametrize(
    ("policies", "prefix", "allowed", "reason"),
    [
        ({"app": APP_RW}, "key/app/", True, "allowed"),
        ({"app": APP_RW}, "key/app/sub/", True, "allowed"),
        ({"app": APP_RW}, "key/", False, "implicit-deny"),  # wider than the grant
        ({"app": APP_RW}, "key/ap", False, "implicit-deny"),
        ({"app": APP_RW, "deny": DENY_SECRET}, "key/app/", False, "explicit-deny"),
        ({"app": APP_RW, "deny": DENY_SECRET}, "key/app/public/", True, "allowed"),
        ({"p": NOT_RESOURCE}, "db/", False, "implicit-deny"),  # would include db/admin
        ({"p": NOT_RESOURCE}, "db/m", True, "allowed"),
    ],
)
def test_prefix_requests(
    policies: dict[str, Policy], prefix: str, allowed: bool, reason: str
) -> None:
    action = "flaredb:Query" if prefix.startswith("db/") else "chainfire:Range"
    d = evaluate(policies, action, prefix, CTX, prefix=True)
    assert (d.allowed, d.reason) == (allowed, reason)


def test_not_resource_deny_on_ranges() -> None:
    deny_outside_app = pol({"Effect": "Deny", "Action": "*", "NotResource": "key/app/*"})
    everything = pol({"Effect": "Allow", "Action": "*", "Resource": "*"})
    ps = {"all": everything, "fence": deny_outside_app}
    assert evaluate(ps, "chainfire:Range", "key/app/", prefix=True).allowed
    assert evaluate(ps, "chainfire:Range", "key/", prefix=True).reason == "explicit-deny"


# -- policy variables ----------------------------------------------------------------------

OWN_KEYS = pol(
    {"Effect": "Allow", "Action": "chainfire:*", "Resource": "key/users/${plasma:username}/*"}
)


@pytest.mark.parametrize(
    ("resource", "ctx", "allowed"),
    [
        ("key/users/alice/x", {"plasma:username": "alice"}, True),
        ("key/users/bob/x", {"plasma:username": "alice"}, False),
        ("key/users/alice/x", {"PLASMA:USERNAME": "alice"}, True),  # keys are case-insensitive
        ("key/users/alice/x", {}, False),  # unresolvable: matches nothing
        ("key/users/bob/x", {"plasma:username": "*"}, False),  # no wildcard smuggling
        ("key/users/bob/x", {"plasma:username": "b?b"}, False),
        ("key/users/alice/x", {"plasma:username": ["alice"]}, False),  # multi-valued
    ],
)
def test_resource_variables(resource: str, ctx: dict[str, Any], allowed: bool) -> None:
    assert evaluate({"own": OWN_KEYS}, "chainfire:Put", resource, ctx).allowed is allowed


def test_variables_need_version_2012_and_dollar_escape() -> None:
    old = parse_policy(
        {
            "Version": "2008-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "a:b", "Resource": "key/${plasma:username}"}
            ],
        }
    )
    ctx = {"plasma:username": "alice"}
    assert not evaluate({"p": old}, "a:b", "key/alice", ctx).allowed
    assert evaluate({"p": old}, "a:b", "key/${plasma:username}", ctx).allowed  # literal
    dollar = pol({"Effect": "Allow", "Action": "a:b", "Resource": "key/${$}{x}"})
    assert evaluate({"p": dollar}, "a:b", "key/${x}").allowed


def test_unresolvable_not_resource_grants_nothing() -> None:
    allow = pol({"Effect": "Allow", "Action": "a:b", "NotResource": "key/${plasma:missing}"})
    assert not evaluate({"p": allow}, "a:b", "key/anything").allowed
    deny = pol({"Effect": "Deny", "Action": "a:b", "NotResource": "key/${plasma:missing}"})
    everything = pol({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert evaluate({"a": everything, "d": deny}, "a:b", "key/x").reason == "explicit-deny"


@settings(deadline=None)
@given(st.lists(_patterns, min_size=1, max_size=4), st.text(alphabet="aAbB/.\n", max_size=6))
def test_one_compiled_pattern_matches_as_the_patterns_one_by_one(
    patterns: list[str], value: str
) -> None:
    # statements match through any_of (compiled once); wildcard_match is the reference
    for ignore_case in (False, True):
        one = any_of(tuple(patterns), ignore_case).fullmatch(value) is not None
        assert one == any(wildcard_match(p, value, ignore_case) for p in patterns)
