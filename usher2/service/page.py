"""The service's web page: one self-contained HTML file (inline CSS and JS, no external fetches).

The page has a file input, a frame index (multi-frame DICOM), one number field per clinical
column of the model, a token field when the service requires one, and a submit button. When the
service requires a token the page itself carries no model details (name, hash, threshold, clinical
columns), as ``/v1/model`` needs the token: the script loads them once the token is entered. It
posts to ``v1/score`` with ``fetch`` and shows the overlay (lesion contour + Grad-CAM), the
probability, the label and the flags. Server data is written with ``textContent`` only.

:func:`render_page` also returns the page's Content-Security-Policy: only the page's own script
and style (by SHA-256) run, images may only be ``data:`` URIs, and ``fetch`` may only reach the
page's own origin, so the browser itself refuses any external request.

Example:
    >>> info = {"name": "m", "version": "0.1", "sha256": "ab" * 32, "threshold": 0.4, "clinical": ["age"]}
    >>> doc, csp = render_page(info, token_required=False, max_upload_mb=20)
    >>> 'data-clinical="age"' in doc, "abababab" in doc, 'id="token"' in doc, "connect-src 'self'" in csp
    (True, True, False, True)
    >>> doc, _ = render_page(info, token_required=True, max_upload_mb=20)
    >>> 'data-clinical="age"' in doc, "abababab" in doc, "0.400" in doc, 'id="token"' in doc
    (False, False, False, True)
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping
from typing import Any

__all__ = ["render_page"]

_STYLE = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:860px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.4em}.meta{color:#555;font-size:.9em}
form{display:grid;gap:.6em;max-width:520px}label{display:grid;gap:.2em}
fieldset{border:1px solid #ccc;display:grid;gap:.4em}button{padding:.4em 1em;justify-self:start}
#status{margin:1em 0;min-height:1.4em}#status.error{color:#a00}
#result img{width:min(100%,512px);image-rendering:pixelated;border:1px solid #ccc}
.prob{font-size:1.3em;font-weight:600}
"""

_SCRIPT = """
const form = document.getElementById("score-form");
const tokenBox = document.getElementById("token");
async function loadModel() {
  // With a token the page carries no model details (as /v1/model): fetch them once the token is entered.
  if (!tokenBox || !tokenBox.value) return;
  let reply, info;
  try {
    reply = await fetch("v1/model", {headers: {"Authorization": "Bearer " + tokenBox.value}});
    info = await reply.json();
  } catch (err) {
    say("Could not load the model: " + err, true);
    return;
  }
  if (!reply.ok) {
    say("Error " + reply.status + ": " + (info.detail || reply.statusText), true);
    return;
  }
  say("", false);
  document.getElementById("meta").textContent = "Model " + info.name + " (usher2 " + info.version + ", sha256 " +
    String(info.sha256).slice(0, 12) + "\u2026), threshold " + Number(info.threshold).toFixed(3) +
    ". Research use only; not a medical device.";
  const box = document.getElementById("clinical");
  for (const old of box.querySelectorAll("label, p")) old.remove();
  for (const c of info.clinical || []) {
    const label = document.createElement("label");
    label.textContent = c + " ";
    const input = document.createElement("input");
    input.type = "number";
    input.step = "any";
    input.name = "clinical_" + c;
    input.dataset.clinical = c;
    label.appendChild(input);
    box.appendChild(label);
  }
  if (!(info.clinical || []).length) {
    const p = document.createElement("p");
    p.textContent = "This model reads no clinical values.";
    box.appendChild(p);
  }
}
if (tokenBox) tokenBox.addEventListener("change", loadModel);
const statusBox = document.getElementById("status");
const result = document.getElementById("result");
function say(text, isError) {
  statusBox.textContent = text;
  statusBox.className = isError ? "error" : "";
}
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("file").files[0];
  if (!file) { say("Choose a frame first.", true); return; }
  const body = new FormData();
  body.append("file", file);
  const clinical = {};
  for (const input of document.querySelectorAll("[data-clinical]")) {
    if (input.value.trim() !== "") clinical[input.dataset.clinical] = Number(input.value);
  }
  if (Object.keys(clinical).length) body.append("clinical", JSON.stringify(clinical));
  const frame = document.getElementById("frame").value.trim();
  if (frame !== "" && frame !== "0") body.append("frame", frame);
  const headers = {};
  if (tokenBox && tokenBox.value) headers["Authorization"] = "Bearer " + tokenBox.value;
  result.hidden = true;
  result.dataset.state = "pending";
  say("Scoring...", false);
  let reply, data;
  try {
    reply = await fetch("v1/score", {method: "POST", body: body, headers: headers});
    data = await reply.json();
  } catch (err) {
    result.dataset.state = "error";
    say("The request failed: " + err, true);
    return;
  }
  if (!reply.ok) {
    result.dataset.state = "error";
    say("Error " + reply.status + ": " + (data.detail || reply.statusText), true);
    return;
  }
  const p = data.probability;
  document.getElementById("probability").textContent =
    p === null ? "No probability: " + (data.error || "the frame could not be scored") : "Probability " + p.toFixed(3);
  document.getElementById("label").textContent = data.label === null ? "" :
    "Label " + data.label + " (" + (data.label === 1 ? "positive" : "negative") + " at threshold " +
    data.threshold.toFixed(3) + ")";
  document.getElementById("flags").textContent = "Flags: " + (data.flags.length ? data.flags.join(", ") : "none");
  document.getElementById("overlay").src = "data:image/png;base64," + data.overlay_png;
  result.hidden = false;
  result.dataset.state = "done";
  say("Scored in " + data.timings.total_s.toFixed(2) + " s (request " + data.request_id + ").", false);
});
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>usher2 scoring</title><link rel="icon" href="data:,"><style>{style}</style></head>
<body>
<h1>usher2: HER2 status from one breast-ultrasound frame</h1>
<p class="meta" id="meta">{meta}
Research use only; not a medical device.</p>
<form id="score-form">
<label>Frame: PNG, JPEG, TIFF, BMP or DICOM (at most {max_mb} MiB)
<input type="file" id="file" name="file" required
 accept=".png,.jpg,.jpeg,.tif,.tiff,.bmp,.dcm,.dicom,image/png,image/jpeg,image/tiff,image/bmp,application/dicom"></label>
<label>DICOM frame index (multi-frame files)
<input type="number" id="frame" name="frame" min="0" step="1" value="0"></label>
<fieldset id="clinical"><legend>Clinical values (optional; empty fields are imputed by the model)</legend>
{clinical}</fieldset>
{token}<button type="submit" id="submit">Score</button>
</form>
<div id="status" role="status"></div>
<div id="result" hidden data-state="idle">
<p class="prob" id="probability"></p><p id="label"></p><p id="flags"></p>
<img id="overlay" alt="The frame with the lesion contour (green) and the Grad-CAM heat map">
</div>
<script>{script}</script>
</body></html>
"""


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_sha(_SCRIPT)}",
        f"style-src {_sha(_STYLE)}",
        "img-src data:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
"""The page's Content-Security-Policy: its own script and style only, ``data:`` images, same-origin fetch."""


def render_page(model_info: Mapping[str, Any], *, token_required: bool, max_upload_mb: float) -> tuple[str, str]:
    """The web page for a model, and its Content-Security-Policy header value.

    Args:
        model_info: :attr:`usher2.score.engine.FrameScorer.model_info` (name, version, sha256,
            threshold, clinical).
        token_required: Show the API token field.
        max_upload_mb: The upload limit, shown next to the file input.

    Returns:
        ``(html, csp)``.
    """
    e = html.escape
    fields = "".join(
        f'<label>{e(str(c))} <input type="number" step="any" data-clinical="{e(str(c))}" name="clinical_{e(str(c))}">'
        "</label>\n"
        for c in model_info.get("clinical") or []
    )
    token = (
        '<label>API token (bearer)<input type="password" id="token" autocomplete="off"></label>\n'
        if token_required
        else ""
    )
    threshold = model_info.get("threshold")
    if token_required:  # as /v1/model: the model's details only with the token (the script loads them)
        meta = "Enter the API token to see the model and its clinical fields."
        clinical = ""
    else:
        meta = (
            f"Model {e(str(model_info.get('name')))} (usher2 {e(str(model_info.get('version')))}, "
            f"sha256 {e(str(model_info.get('sha256') or '')[:12])}&hellip;), threshold "
            f"{f'{threshold:.3f}' if isinstance(threshold, int | float) else 'unknown'}."
        )
        clinical = fields or "<p>This model reads no clinical values.</p>\n"
    doc = _TEMPLATE.format(
        style=_STYLE,
        script=_SCRIPT,
        meta=meta,
        max_mb=f"{max_upload_mb:g}",
        clinical=clinical,
        token=token,
    )
    return doc, CSP
