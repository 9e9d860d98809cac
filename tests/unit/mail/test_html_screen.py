"""mail/html_screen.py: deceptive and active HTML, refused or stripped, judged as an HTML5 parser reads it (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation
from airflow_secure_mail.mail.html_screen import check_html_mode, screen_html
from airflow_secure_mail.mail.screen import MailPolicy


@pytest.mark.parametrize(
    ("html", "rule", "element"),
    [
        ("<p>Hi<script>fetch('/x')</script></p>", "html_script", "<script>"),
        ("<svg><script>alert(1)</script></svg>", "html_script", "<script>"),
        ("<!-- a --!><script>alert(1)</script> -->", "html_script", "<script>"),
        ('<iframe src="https://example.com/x"></iframe>', "html_embedded", '<iframe src="https://example.com/x">'),
        ('<form action="https://example.net/login"><input name="pw"></form>', "html_form", '<form action="https'),
        ('<img src="chart.png" onerror="steal()">', "html_event_handler", 'onerror="steal()"'),
        ('<body onload="steal()"><p>hi</p></body>', "html_event_handler", "<body onload"),
        ('<a href="javascript:steal()">open</a>', "html_javascript_url", '<a href="javascript:steal()">'),
        ('<a href="java&#x09;script:steal()">open</a>', "html_javascript_url", "<a href="),
        ('<a href=" VBScript:steal()">open</a>', "html_javascript_url", "<a href="),
        ('<div style="background:url(javascript:steal())">x</div>', "html_javascript_url", "<div style="),
        ('<meta http-equiv="refresh" content="0;url=https://example.net">', "html_javascript_url", "<meta"),
    ],
    ids=[
        "script", "script_in_svg", "script_after_bogus_comment_end", "iframe", "form", "img_onerror",
        "body_onload", "javascript_url", "entity_split_javascript", "vbscript", "javascript_in_css", "meta_refresh",
    ],
)  # fmt: skip
def test_active_html_is_refused_naming_rule_and_element(html, rule, element):
    with pytest.raises(PolicyViolation, match="^HTML body: ") as info:
        screen_html(html)
    assert info.value.rule == rule
    assert info.value.item is not None and element in info.value.item


@pytest.mark.parametrize(
    ("html", "shown", "target"),
    [
        ('<a href="https://evil.example.net/login">www.paypal.com</a>', "www.paypal.com", "evil.example.net"),
        ('<a href="https://paypal.com.evil.net/">https://paypal.com/signin</a>', "paypal.com", "paypal.com.evil.net"),
        ('<a href="https://evil.net/">Sign in at <b>paypal.com</b> now</a>', "paypal.com", "evil.net"),
        ('<a href="mailto:help@evil.net">help@paypal.com</a>', "paypal.com", "evil.net"),
        ('<a href="https://xn--80ak6aa92e.com/">https://аpple.com</a>', "xn--pple-43d.com", "xn--80ak6aa92e.com"),
    ],
    ids=["www_text", "lookalike_subdomain", "host_in_sentence", "mailto", "homograph"],
)
def test_disguised_link_is_refused(html, shown, target):
    with pytest.raises(PolicyViolation, match=f"shows {shown} but points to {target}") as info:
        screen_html(html)
    assert info.value.rule == "html_deceptive_link"
    assert info.value.item is not None and info.value.item.startswith("<a href=")


def test_disguised_link_is_refused_in_strip_mode_too():
    with pytest.raises(PolicyViolation, match="shows bank.example.com but points to evil.net") as info:
        screen_html('<p><script>x()</script><a href="https://evil.net">bank.example.com</a></p>', "strip")
    assert info.value.rule == "html_deceptive_link"


@pytest.mark.parametrize(
    "html",
    [
        '<p>See <a href="https://example.com/r/1">example.com</a></p>',
        '<p><a href="https://reports.example.com/q3">https://example.com</a></p>',
        '<p><a href="https://example.com">www.example.com</a></p>',
        '<p><a href="https://s3.example.com/b/sales.csv">sales.csv</a> and <a href="https://x.example">report.pdf</a></p>',
        '<p><a href="https://airflow.example.com/log?try=1">Open the task log</a></p>',
        '<p><a href="#top">example.com</a> <img src="cid:chart" alt="chart"></p>',
    ],
    ids=["same_host", "subdomain_of_shown", "www", "file_names", "plain_words", "relative_and_cid"],
)
def test_honest_html_is_returned_unchanged(html):
    assert screen_html(html) == html
    assert screen_html(html, "strip") == html


def test_strip_mode_removes_active_content_and_keeps_the_rest():
    html = (
        '<p onclick="x()">Totals <b>up</b></p><script>steal()</script>'
        '<form action="https://example.net/f">Name <input name="n"><button>Go</button></form>'
        '<a href="javascript:steal()">open</a><iframe src="https://example.net"></iframe>'
    )
    sent = screen_html(html, "strip")
    assert "<p>Totals <b>up</b></p>" in sent and "Name " in sent and "<a>open</a>" in sent
    for gone in ("onclick", "<script", "steal", "<form", "<input", "<button", "javascript:", "<iframe"):
        assert gone not in sent, gone


def test_an_unknown_html_mode_is_refused_naming_the_choices():
    with pytest.raises(
        ConfigurationError, match=r"MailPolicy.html='allow_everything': use 'refuse_active' \(default\)"
    ):
        MailPolicy(html="allow_everything")
    with pytest.raises(ConfigurationError, match="use 'refuse_active'"):
        screen_html("<p>x</p>", "off")
    assert check_html_mode("strip") is None


def test_default_alert_template_passes_the_html_rules():
    from pathlib import Path

    import jinja2

    import airflow_secure_mail.notifications as notifications

    source = Path(notifications.__file__).with_name("templates").joinpath("alert.html.j2").read_text()
    html = jinja2.Template(source).render(
        title="t", color="#c00", status="failed", dag_id="d", task_id="t", rows=[("run", "r")],
        error="boom", log_url="https://airflow.example.com/dags/d/runs/r/tasks/t?try_number=1",
    )  # fmt: skip
    assert screen_html(html) == html


_JS = "javascript:"


@settings(max_examples=50, deadline=None)  # the first call imports the parser; the machine is shared
@given(st.lists(st.sampled_from(["\t", "\n", "\r", " ", "&#x09;", "&#10;", ""]), min_size=len(_JS), max_size=len(_JS)))
def test_javascript_url_split_by_invisible_characters_is_always_refused(fillers):
    scheme = "".join(ch + filler for ch, filler in zip(_JS, fillers, strict=True))
    with pytest.raises(PolicyViolation, match="javascript: URL in href= on <a> is not allowed") as info:
        screen_html(f'<a href="{scheme}steal()">open</a>')
    assert info.value.rule == "html_javascript_url"


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8)


@settings(max_examples=50, deadline=None)
@given(_LABEL, _LABEL, _LABEL, st.sampled_from(["https://{}/", "www.{}", "{}"]))
def test_links_naming_an_unrelated_host_are_refused_and_subdomains_pass(bank, evil, sub, shown_as):
    shown, target = f"{bank}.com", f"{evil}.net"
    text = shown_as.format(shown) if shown_as != "www.{}" else f"www.{shown}"
    with pytest.raises(PolicyViolation, match=f"shows (www.)?{shown} but points to {target}") as info:
        screen_html(f'<a href="https://{target}/login">{text}</a>')
    assert info.value.rule == "html_deceptive_link"
    honest = f'<a href="https://{sub}.{shown}/login">{text}</a>'
    assert screen_html(honest) == honest


@pytest.mark.parametrize(
    "shown",
    [
        "analytics.orders", "public.users", "config.yaml", "model.sql", "orders_v2.parquet", "dbt_project.yml",
        "report.zip", "clip.mov", "README.md", "etl.py", "run.sh", "raw_data.events", "warehouse.public.users",
        "libfoo.so", "metrics.nc",
    ],
)  # fmt: skip
def test_dotted_names_that_are_not_hosts_may_link_anywhere(shown):
    html = f'<p>Model <a href="https://dbt.example.com/#!/model/{shown}">{shown}</a> failed.</p>'
    assert screen_html(html) == html
    assert screen_html(html, "strip") == html


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("paypal.com", "paypal.com"),
        ("https://bank.com/login", "bank.com"),
        ("http://orders.internal/", "orders.internal"),
        ("www.bank.events", "www.bank.events"),
        ("allegro.pl", "allegro.pl"),
        ("openai.ai", "openai.ai"),
        ("BANK.EXAMPLE.CO.UK", "bank.example.co.uk"),
        ("support@bank.de", "bank.de"),
        ("bank.xn--p1ai", "bank.xn--p1ai"),
        ("банк.рф", "xn--80ab2al.xn--p1ai"),
    ],
    ids=["com", "url", "url_any_tld", "www", "pl", "ai", "uppercase_cctld", "address", "idn_tld_ascii", "idn_tld"],
)
def test_host_claims_are_still_judged(text, shown):
    with pytest.raises(PolicyViolation, match=f"shows {re.escape(shown)} but points to evil.example") as info:
        screen_html(f'<a href="https://evil.example/">{text}</a>')
    assert info.value.rule == "html_deceptive_link"


def test_the_built_in_tld_list_covers_the_systems_public_suffix_list():
    """The list is a snapshot: Debian's publicsuffix package, where installed, says whether it went stale."""
    from pathlib import Path

    from airflow_secure_mail.mail._tlds import is_tld

    psl = Path("/usr/share/publicsuffix/public_suffix_list.dat")
    if not psl.exists():
        pytest.skip("Debian's publicsuffix package is not installed")
    icann = psl.read_text(encoding="utf-8").partition("// ===END ICANN DOMAINS===")[0].splitlines()
    tlds = {line.strip().lstrip("!*.").rpartition(".")[2] for line in icann if line.strip() and line[0] != "/"}
    missing = sorted(t for t in tlds if not is_tld(t.encode("idna").decode("ascii")))
    assert missing == []
    assert not any(is_tld(word) for word in ("orders", "users", "yaml", "sql", "parquet", "yml", "csv", "json"))


@pytest.mark.parametrize(
    ("html", "rule", "message", "element"),
    [
        ("<noscript><p>Enable images</p></noscript>", "html_noscript", "<noscript> reads differently", "<noscript>"),
        ('<base href="https://x.example/"><p>x</p>', "html_base", "<base> redirects every relative link", "<base"),
        ('<link rel="Stylesheet" href="https://x.example/a.css">', "html_generated_text", "remote stylesheet", "<link"),
        ("<style>@import url(https://x.example/a.css);</style>", "html_generated_text", "CSS @import", "<style>"),
        ("<style>p::after{content:'x'}</style>", "html_generated_text", "CSS content: declarations", "<style>"),
        ('<p style="CONTENT : url(x.png)">x</p>', "html_generated_text", "in style= on <p>", "<p style="),
        ('<svg><a xlink:href="https://evil.example/"><text>paypal.com</text></a></svg>', "html_deceptive_link",
         "shows paypal.com but points to evil.example", "<a xlink:href="),
        ("<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", "html_mutation",
         "changes when parsed again and then holds this: event handler onerror=", '<img src="x" onerror='),
    ],
    ids=["noscript", "base", "link_stylesheet", "import", "content", "content_in_style_attribute", "svg_link", "mxss"],
)  # fmt: skip
def test_markup_the_reader_reads_differently_is_refused(html, rule, message, element):
    with pytest.raises(PolicyViolation, match=re.escape(message)) as info:
        screen_html(html)
    assert info.value.rule == rule
    assert info.value.item is not None and element in info.value.item


def test_strip_mode_removes_what_the_reader_reads_differently():
    html = (
        '<base href="https://x.example/"><link rel="stylesheet" href="https://x.example/a.css">'
        "<style>p{color:red}</style><style>p::after{content:'x'}</style>"
        '<p style="content:url(x.png)">Totals</p><noscript><p>Enable scripts</p></noscript>'
    )
    sent = screen_html(html, "strip")
    assert sent == "<html><head><style>p{color:red}</style></head><body><p>Totals</p></body></html>"


@pytest.mark.parametrize(
    ("css", "what"),
    [
        ("list-style-type:'paypal.com '", "CSS list markers"),
        ("list-style:&quot;paypal.com&quot; inside", "CSS list markers"),
        ("list-style: pp inside", "CSS list markers"),
        ("list-style-type:\\70 p", "CSS list markers"),
        ("quotes:'paypal.com' ''", "CSS quotes:"),
        ("QUOTES : '\\201c' '\\201d'", "CSS quotes:"),
    ],
    ids=["type_string", "shorthand_string", "counter_style_name", "escaped_name", "quotes", "quotes_uppercase"],
)
def test_list_markers_and_quotes_that_show_text_are_refused(css, what):
    html = f'<a href="https://x.example/" style="display:list-item;{css}"><q>Sign in</q></a>'
    with pytest.raises(PolicyViolation, match=re.escape(what)) as info:
        screen_html(html)
    assert info.value.rule == "html_generated_text"
    assert "style" not in screen_html(html, "strip")


def test_a_counter_style_rule_is_refused():
    html = '<style>@Counter-Style pp{system:cyclic;symbols:"x"}</style><ol><li>a</li></ol>'
    with pytest.raises(PolicyViolation, match="CSS @counter-style") as info:
        screen_html(html)
    assert info.value.rule == "html_generated_text"


@pytest.mark.parametrize(
    "css",
    [
        "list-style:none", "list-style: disc outside none", "list-style-type:decimal !important",
        "list-style:square inside url(https://x.example/b.png)", "list-style-type:lower-roman", "list-style:inherit",
        "quotes:none", "quotes:auto", "list-style-position:inside", "list-style-image:none",
    ],
)  # fmt: skip
def test_ordinary_list_styles_and_quotes_pass(css):
    html = f'<ul style="{css}"><li>a</li></ul><style>ul.x{{{css}}}</style>'
    assert screen_html(html) == html


@pytest.mark.parametrize(
    "text",
    [
        "paypal.com\u200b", "pay\u200dpal.com", "paypal.&shy;com", "paypal\u3002com", "paypal\uff0ecom",
        "paypal\uff61com", "\u2068paypal.com\u2069", "pay<span>\u00ad</span>pal.com",
    ],
    ids=["zwsp", "zwj", "soft_hyphen", "ideographic_stop", "fullwidth_stop", "halfwidth_stop", "isolates", "in_span"],
)  # fmt: skip
def test_invisible_and_look_alike_characters_do_not_hide_a_host(text):
    with pytest.raises(PolicyViolation, match="shows paypal.com but points to evil.example") as info:
        screen_html(f'<a href="https://evil.example/x">{text}</a>')
    assert info.value.rule == "html_deceptive_link"


@pytest.mark.parametrize(
    "text",
    ["paypal.com:443/login", "http:paypal.com", "https:\\\\paypal.com/login", '<img alt="paypal.com" src="x.png">',
     '<span title="paypal.com">Sign in</span>'],
    ids=["port", "scheme_without_slashes", "scheme_with_backslashes", "img_alt", "title"],
)  # fmt: skip
def test_a_host_shown_with_a_port_a_bare_scheme_or_as_image_text_is_judged(text):
    """A mail client that blocks images shows the alt text in the link; browsers read http:host as a URL."""
    with pytest.raises(PolicyViolation, match="shows paypal.com but points to evil.example") as info:
        screen_html(f'<a href="https://evil.example/x">{text}</a>')
    assert info.value.rule == "html_deceptive_link"


@pytest.mark.parametrize("text", ["https: is required", "xhttp:paypal.com-ish", "Note:12"])
def test_a_scheme_word_that_names_no_host_passes(text):
    assert (
        screen_html(f'<a href="https://looker.example.com/x">{text}</a>')
        == f'<a href="https://looker.example.com/x">{text}</a>'
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("secure_login.paypal.com", "secure_login.paypal.com"),
        ("amazon.de", "amazon.de"),
        ("bank.co.uk", "bank.co.uk"),
        ("ftp://files.bank.events/", "files.bank.events"),
        ("wss://bank.example/", "bank.example"),
    ],
    ids=["underscore_in_subdomain", "cctld", "second_level_cctld", "ftp_any_tld", "wss"],
)
def test_host_claims_judged_after_the_narrower_bare_name_rule(text, shown):
    with pytest.raises(PolicyViolation, match=f"shows {re.escape(shown)} but points to evil.example") as info:
        screen_html(f'<a href="https://evil.example/x">{text}</a>')
    assert info.value.rule == "html_deceptive_link"


@pytest.mark.parametrize(
    "text",
    [
        "orders.date", "customer.email", "events.data", "raw.events", "dim.store", "dbt.run", "user.name",
        "s3://bucket/report.csv", "gs://bucket/x.parquet", "hdfs://namenode/warehouse", "file://host/tmp/x.csv",
        "paypal_login.com", "analytics.orders",
    ],
)  # fmt: skip
def test_data_names_are_not_host_claims(text):
    html = f'<p>See <a href="https://looker.example.com/explore/1">{text}</a></p>'
    assert screen_html(html) == html


@pytest.mark.parametrize("text", ["users.id", "df.info"])
def test_a_data_name_ending_in_a_country_domain_is_judged_and_the_error_says_how_to_avoid_it(text):
    with pytest.raises(PolicyViolation, match=f"shows {text} but points to looker.example.com") as info:
        screen_html(f'<a href="https://looker.example.com/explore/1">{text}</a>')
    assert info.value.rule == "html_deceptive_link"
    assert f"if {text} is not a host name" in str(info.value)


@pytest.mark.parametrize(
    "html",
    [
        "<pre>\n\nERROR task failed\n</pre>", "<p>log</p><pre class='log'>\n\n  x\n</pre>", "<listing>\n\nx</listing>",
        "<pre>\n<b>x</b></pre>",
    ],
    ids=["pre_blank_first_line", "pre_with_attribute", "listing", "pre_single_newline"],
)  # fmt: skip
def test_pre_starting_with_a_blank_line_is_not_a_mutation(html):
    assert screen_html(html) == html
    assert "\n\nERROR" in screen_html("<pre>\n\nERROR</pre><script>x</script>", "strip")


@pytest.mark.parametrize(
    "hidden",
    [
        '<span style="display:none">_</span>', '<span style="DISPLAY: none !important">_</span>',
        '<span style="font-size:0">_</span>', '<span style="font-size:0px;color:red">_x_</span>',
        "<span hidden>_</span>", '<span style="visibility:hidden;font-size:0pt">_</span>',
    ],
    ids=["display_none", "display_none_important", "font_size_0", "font_size_0px", "hidden_attribute", "0pt"],
)  # fmt: skip
def test_text_hidden_by_inline_style_does_not_break_a_host_in_a_link(hidden):
    with pytest.raises(PolicyViolation, match="shows paypal.com but points to evil.example") as info:
        screen_html(f'<a href="https://evil.example/x">paypal{hidden}.com</a>')
    assert info.value.rule == "html_deceptive_link"


def test_text_that_stays_visible_still_separates():
    html = '<a href="https://looker.example.com/1">orders<span style="font-size:10px">_v2</span>.com_export</a>'
    assert screen_html(html) == html
