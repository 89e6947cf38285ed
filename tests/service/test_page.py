"""The service's web page (usher2.service.page): model details without a token, none with one, and a CSP
that admits exactly the page's own script and style."""

from __future__ import annotations

import base64
import hashlib
import re

from usher2.service.page import render_page

INFO = {"name": "her2-combined", "version": "0.9", "sha256": "0123456789abcdef" * 4, "threshold": 0.4375}


def _csp(csp: str) -> dict[str, str]:
    return dict(part.split(" ", 1) for part in csp.split("; "))


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_without_a_token_the_page_shows_the_model_and_one_field_per_clinical_column() -> None:
    doc, _ = render_page({**INFO, "clinical": ["age", "grade"]}, token_required=False, max_upload_mb=20)
    assert "Model her2-combined (usher2 0.9, sha256 0123456789ab&hellip;), threshold 0.438." in doc
    assert re.findall(r'data-clinical="([^"]+)"', doc) == ["age", "grade"]
    assert 'name="clinical_age"' in doc and 'name="clinical_grade"' in doc
    assert 'id="token"' not in doc
    assert "(at most 20 MiB)" in doc


def test_with_a_token_the_page_carries_no_model_details() -> None:
    doc, _ = render_page({**INFO, "clinical": ["age"]}, token_required=True, max_upload_mb=2.5)
    assert 'id="token"' in doc and 'type="password"' in doc
    for secret in ("her2-combined", "0123456789ab", "0.438", 'data-clinical="age"'):
        assert secret not in doc.replace("input.dataset.clinical", "")  # the script's own name is no detail
    assert "Enter the API token" in doc
    assert "(at most 2.5 MiB)" in doc


def test_a_model_without_clinical_columns_or_threshold_says_so() -> None:
    doc, _ = render_page({"name": "m", "version": "1", "sha256": None}, token_required=False, max_upload_mb=1)
    assert "<p>This model reads no clinical values.</p>" in doc
    assert "threshold unknown." in doc
    assert 'data-clinical="' not in doc


def test_server_values_are_escaped() -> None:
    hostile = '<script>alert(1)</script>"'
    doc, _ = render_page({**INFO, "name": hostile, "clinical": [hostile]}, token_required=False, max_upload_mb=1)
    assert hostile not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in doc
    assert doc.count("<script>") == 1  # the page's own script only


def test_the_csp_admits_the_inline_script_and_style_by_hash_and_nothing_external() -> None:
    doc, csp = render_page({**INFO, "clinical": []}, token_required=False, max_upload_mb=1)
    script = re.search(r"<script>(.*?)</script>", doc, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", doc, re.S).group(1)
    policy = _csp(csp)
    assert policy["script-src"] == _sha(script)
    assert policy["style-src"] == _sha(style)
    assert policy["default-src"] == "'none'" and policy["img-src"] == "data:"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert not re.search(r"(src|href)=\"https?:", doc)  # no external fetch in the page itself


def test_the_policy_does_not_depend_on_the_model() -> None:
    a = render_page({**INFO, "clinical": ["age"]}, token_required=False, max_upload_mb=1)[1]
    b = render_page({"name": "other"}, token_required=True, max_upload_mb=50)[1]
    assert a == b
