"""mail/addresses.py: our own mailbox parser, control-character checks and domain normalization (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail.addresses import (
    Mailbox,
    check_decoded,
    check_no_control,
    normalize_domain,
    parse_mailbox,
    parse_mailboxes,
    special_use_suffix,
)
from tests.strategies import CONTROL_CHARS, SAFE_TEXT, addr_specs, encoded_controls, encoded_word

CONTROL = "contains a control character"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ops@example.com", Mailbox("ops@example.com")),
        ("Ops Team <ops@example.com>", Mailbox("ops@example.com", "Ops Team")),
        ('"Doe, Jane" <jane@example.com>', Mailbox("jane@example.com", "Doe, Jane")),
        ("  ops@Example.COM  ", Mailbox("ops@example.com")),
        ("Leser@BÜCHER.example", Mailbox("Leser@xn--bcher-kva.example")),
    ],
    ids=["bare", "named", "quoted_name_with_comma", "padded_mixed_case", "idna_domain"],
)
def test_mailbox_forms_parse_to_a_normalized_addr_spec(value, expected):
    assert parse_mailbox(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice@allowed.example, bob@evil.example", "is not a single address"),
        ("alice@allowed.example <bob@evil.example>", "is not a single address"),
        ('"bob@evil.example"@allowed.example', "is not a single address"),
        ("alice@allowed.example@evil.example", "is invalid"),
        ("ops@", "is invalid"),
        ("ops@localhost", "special-use domain .localhost"),
        ("ops@[127.0.0.1]", "is invalid"),
    ],
    ids=["two_addresses", "address_as_name", "quoted_local", "two_at_signs", "no_domain", "localhost", "literal"],
)
def test_anything_but_one_mailbox_is_refused_naming_the_value(value, message):
    with pytest.raises(PolicyViolation, match=message) as info:
        parse_mailbox(value, "to")
    assert info.value.rule in ("address", "special_use_domain")


def test_non_string_address_is_refused_with_its_type():
    with pytest.raises(PolicyViolation, match="to must be a string, got int") as info:
        parse_mailbox(42, "to")  # type: ignore[arg-type]
    assert (info.value.rule, info.value.item) == ("address", "to")


@pytest.mark.parametrize(
    "value",
    ["=?utf-8?q?bob=40evil.example?=@allowed.example", "x=?utf-8?b?Ym9i?=@allowed.example"],
    ids=["q_word", "b_word_inside"],
)
def test_encoded_word_in_the_local_part_is_refused(value):
    """Some mail programs decode such a local part into a different address ("Splitting the email atom")."""
    with pytest.raises(PolicyViolation, match=r"RFC 2047 encoded word \('=\?'\)") as info:
        parse_mailbox(value, "to")
    assert info.value.rule == "address"


def test_display_name_decoding_to_crlf_is_refused():
    with pytest.raises(PolicyViolation, match=f"to display name {CONTROL}") as info:
        parse_mailbox('"=?utf-8?q?Ops=0D=0ABcc:_x@evil.example?=" <ops@example.com>', "to")
    assert info.value.rule == "header_injection"


def test_plain_encoded_display_name_is_kept_as_written():
    assert parse_mailbox("=?utf-8?q?J=C3=BCrgen?= <j@example.com>").name == "=?utf-8?q?J=C3=BCrgen?="


@pytest.mark.parametrize("address", ["ops@mail.corp.local", "ops@relay.internal", "ops@host.test", "ops@x.alt"])
def test_special_use_domains_are_refused_by_default_and_say_how_to_allow(address):
    with pytest.raises(PolicyViolation, match=r"allow_special_use_domains=True") as info:
        parse_mailbox(address, "to")
    assert (info.value.rule, info.value.item) == ("special_use_domain", address)


def test_special_use_domains_parse_when_allowed_with_the_suffix_kept():
    assert parse_mailbox("Ops <OPS@Mail.Corp.LOCAL>", allow_special_use_domains=True) == Mailbox(
        "OPS@mail.corp.local", "Ops"
    )


@pytest.mark.parametrize("address", ["ops@local", "ops@bad_label.local"])
def test_allowed_special_use_domain_still_gets_syntax_checks(address):
    with pytest.raises(PolicyViolation, match=f"to '{address}' is invalid") as info:
        parse_mailbox(address, "to", allow_special_use_domains=True)
    assert info.value.rule == "address"


@pytest.mark.parametrize(
    ("domain", "suffix"),
    [("mail.corp.local", "local"), ("LOCALHOST.", "localhost"), ("x.onion", "onion"), ("example.com", None)],
)
def test_special_use_suffix_names_the_reserved_name(domain, suffix):
    assert special_use_suffix(domain) == suffix


def test_several_bare_addresses_in_one_string_split_on_commas_and_semicolons():
    boxes = parse_mailboxes("a@example.com; b@example.com,, c@example.com", "to")
    assert [b.addr for b in boxes] == ["a@example.com", "b@example.com", "c@example.com"]


def test_a_string_with_a_named_mailbox_is_one_mailbox_not_split_on_its_comma():
    with pytest.raises(PolicyViolation, match="is not a single address"):
        parse_mailboxes("Ops <ops@example.com>, dev@example.com", "to")
    assert parse_mailboxes(['"Doe, Jane" <j@example.com>', "dev@example.com"], "to") == [
        Mailbox("j@example.com", "Doe, Jane"),
        Mailbox("dev@example.com"),
    ]
    assert parse_mailboxes(None, "cc") == []


@pytest.mark.parametrize("breaker", ["\r", "\n", "\x00", "\x0b", "\x0c", "\x1c", "\x7f", "\x85", "\u2028", "\u2029"])
def test_every_line_breaking_or_control_character_is_refused(breaker):
    with pytest.raises(PolicyViolation, match=f"subject {CONTROL}") as info:
        check_no_control(f"ok{breaker}Bcc: x@evil.example", "subject")
    assert (info.value.rule, info.value.item) == ("header_injection", "subject")


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?=",
        "=?utf-8?b?cg0KQmNjOiBhdHRhY2tlckBldmlsLmV4YW1wbGU=?=",
        "=?utf-7?q?+AA0-?=",
        "=?x-no-such-charset?q?a=0Db?=",
        "utf-8''r%0D%0ABcc%3A%20attacker",
        "report%0A.csv",
    ],
    ids=["rfc2047_q", "rfc2047_b", "utf7", "unknown_charset", "rfc2231", "percent"],
)
def test_values_that_decode_to_control_characters_are_refused(value):
    with pytest.raises(PolicyViolation, match=f"file name {CONTROL}"):
        check_decoded(value, "file name")


@pytest.mark.parametrize("value", ["report.csv", "=?utf-8?q?Bericht_=C3=9Cmsatz?=.csv", "100%.csv", "=?broken"])
def test_values_that_decode_cleanly_pass(value):
    assert check_decoded(value, "file name") is None


def test_domains_are_case_folded_and_idna_encoded():
    assert normalize_domain(" Bücher.Example. ") == "xn--bcher-kva.example"


def test_a_domain_that_is_not_idna_is_refused():
    with pytest.raises(PolicyViolation, match=r"domain 'a\.\.b' is not a valid IDNA name") as info:
        normalize_domain("a..b")
    assert info.value.rule == "domain"


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(addr_specs(), SAFE_TEXT)
def test_valid_addr_specs_round_trip_bare_named_and_quoted(spec, name):
    written, normalized = spec
    assert parse_mailbox(written) == Mailbox(normalized)
    assert parse_mailbox(f"{name} <{written}>") == Mailbox(normalized, name.strip())
    assert parse_mailbox(f'"{name}, Ops" <{written}>') == Mailbox(normalized, f"{name}, Ops".strip())


@settings(max_examples=25, deadline=None)
@given(st.lists(addr_specs(), min_size=1, max_size=5), st.sampled_from([",", ";", ", ", " ; "]))
def test_lists_of_bare_addresses_round_trip_in_order(specs, separator):
    boxes = parse_mailboxes(separator.join(w for w, _ in specs), "to")
    assert [b.addr for b in boxes] == [n for _, n in specs]


@settings(max_examples=50, deadline=None)
@given(addr_specs(), SAFE_TEXT, CONTROL_CHARS, st.integers(min_value=0), st.booleans())
def test_a_control_character_anywhere_in_a_mailbox_is_refused(spec, name, control, position, named):
    value = f"{name} <{spec[0]}>" if named else spec[0]
    at = position % (len(value) + 1)
    with pytest.raises(PolicyViolation, match=f"to {CONTROL}") as info:
        parse_mailbox(value[:at] + control + value[at:], "to")
    assert info.value.rule == "header_injection"


@settings(max_examples=40, deadline=None)
@given(addr_specs(), encoded_controls())
def test_a_display_name_hiding_a_control_character_in_an_encoded_word_is_refused(spec, encoded):
    form, value = encoded
    if form == "rfc2231":  # only a MIME parameter is RFC 2231; a display name carries RFC 2047 words
        value = encoded_word("a\r\nb", "utf-8", "q")
    with pytest.raises(PolicyViolation, match=f"to display name {CONTROL}"):
        parse_mailbox(f'"{value}" <{spec[0]}>', "to")


@settings(max_examples=40, deadline=None)
@given(addr_specs(), SAFE_TEXT, st.sampled_from(["q", "b"]))
def test_an_encoded_word_in_the_local_part_is_always_refused(spec, text, encoding):
    local, _, domain = spec[0].partition("@")
    word = encoded_word(text or "x", "utf-8", encoding)
    with pytest.raises(PolicyViolation, match="RFC 2047 encoded word"):
        parse_mailbox(f"{word}{local}@{domain}", "to")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_the_parser_only_raises_policy_violation_and_returns_one_clean_addr_spec(text):
    try:
        box = parse_mailbox(text)
    except PolicyViolation:
        return
    check_no_control(box.addr, "addr")
    check_decoded(box.name, "name")
    local, _, domain = box.addr.rpartition("@")
    assert box.addr.count("@") == 1 and "=?" not in local and domain == domain.lower()
    assert parse_mailbox(box.addr).addr == box.addr


@pytest.mark.parametrize("value", ["jörg@example.com", "Jörg <jörg@example.com>", "用户@example.com"])
def test_a_non_ascii_local_part_is_refused_because_smtputf8_is_not_supported(value):
    with pytest.raises(PolicyViolation, match="non-ASCII local part: SMTPUTF8 is not supported") as info:
        parse_mailbox(value, "to")
    assert info.value.rule == "address"


def test_a_non_ascii_display_name_and_idna_domain_still_parse():
    mailbox = parse_mailbox("Jörg <joerg@Bücher.example>", "to")
    assert (mailbox.name, mailbox.addr) == ("Jörg", "joerg@xn--bcher-kva.example")
