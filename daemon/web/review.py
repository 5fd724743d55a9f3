"""``/review``: recent rejects and quarantined files per line, with the capture and its heatmap; an
operator marks a verdict *good part* or *defect*.

Server-rendered HTML with no scripts, fonts or styles from anywhere else (factory PCs are offline).
A label is a row in ``labels`` (who, when, which) and a copy of the capture in the line's
retraining folder, ``<paths.retraining>/good/`` or ``/defect/``, named ``<row id>-<name>``: folders
``inspectd train --normal`` and ``--abnormal`` take as they are. Images are served by row id only,
from the paths the database recorded, so no request names a file. Every request must carry
``metrics.token`` (``?token=``, a form field, or ``Authorization: Bearer``) when one is set; without
one the page answers only on a loopback address.
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from daemon.cli.results import parse_since
from daemon.db.labels import Reviewed, add_label, for_review, get_row, lines_seen
from daemon.db.models import LABELS, Inspection, Label
from daemon.db.store import Store
from daemon.web.server import Request, Response, Route
from inspectd.errors import InspectdError

HTML = "text/html; charset=utf-8"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
STATUS_CHOICES = {
    "rejected": ("rejected",),
    "quarantined": ("quarantined",),
    "both": ("rejected", "quarantined"),
}
LABEL_TEXT = {"good": "good part", "defect": "defect"}


@dataclass
class ReviewPage:
    store: Store
    retraining: dict[str, Path]  # line -> its retraining folder
    token: str | None = None
    open_without_token: bool = True  # a loopback server without a token
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))

    def routes(self) -> dict[str, Route]:
        return {"/review": self.page, "/review/image": self.image, "/review/label": self.label}

    # -- access ---------------------------------------------------------------------------------
    def _given_token(self, request: Request, form: dict[str, list[str]]) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth.removeprefix("Bearer ").strip()
        given = request.query.get("token") or form.get("token")
        return given[0] if given else None

    def _refused(self, request: Request, form: dict[str, list[str]] | None = None) -> Response | None:
        if self.token is None:
            if self.open_without_token:
                return None
            return Response.text(
                403, "the review page needs metrics.token when the server is not on loopback\n"
            )
        given = self._given_token(request, form or {})
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return Response.text(403, "wrong or missing token (?token=... or Authorization: Bearer ...)\n")
        return None

    def _keep(self, request: Request, form: dict[str, list[str]] | None = None) -> dict[str, str]:
        """The token to carry into links and forms, if one is in use."""
        token = self._given_token(request, form or {}) if self.token else None
        return {"token": token} if token else {}

    # -- pages ----------------------------------------------------------------------------------
    def page(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        q = {k: v[0] for k, v in request.query.items() if v}
        line = q.get("line") or None
        status = q.get("status", "both") if q.get("status") in STATUS_CHOICES else "both"
        try:
            since = parse_since(q["since"]) if q.get("since") else None
        except InspectdError as exc:
            return Response.text(400, f"{exc}\n")
        found = for_review(self.store, statuses=STATUS_CHOICES[status], line=line, since=since)
        body = render_page(found, lines_seen(self.store), q, self._keep(request), q.get("done"))
        return Response(200, body.encode("utf-8"), HTML)

    def image(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        row = _row_from(self.store, request.query)
        if row is None:
            return Response.text(404, "no such inspection\n")
        kind = (request.query.get("kind") or ["capture"])[0]
        path = Path(row.heatmap_path) if kind == "heatmap" and row.heatmap_path else Path(row.final_path)
        try:
            data = path.read_bytes()
        except OSError:
            return Response.text(404, f"{path.name} is no longer there (moved or pruned)\n")
        return Response(200, data, IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    def label(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.text(405, "POST a form: id, label (good|defect), by\n")
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if (refused := self._refused(request, form)) is not None:
            return refused
        row = _row_from(self.store, form)
        verdict = (form.get("label") or [""])[0]
        if row is None or verdict not in LABELS:
            return Response.text(400, "need id of an inspection and label good or defect\n")
        who = (form.get("by") or [""])[0].strip()[:255] or f"operator@{socket.gethostname()}"
        copied = self._copy(row, verdict)
        label = Label(inspection_id=row.id, label=verdict, labelled_by=who, labelled_at=self.now())
        label.copied_to = str(copied) if copied is not None else None
        add_label(self.store, label)
        back = {k: v[0] for k, v in form.items() if k in ("line", "status", "since") and v}
        back.update(self._keep(request, form), done=f"{row.id}")
        return Response(303, b"", headers={"Location": "/review?" + urlencode(back)})

    def _copy(self, row: Inspection, verdict: str) -> Path | None:
        """The capture, copied (temp name, then rename) into the line's retraining folder."""
        folder = self.retraining.get(row.line)
        source = Path(row.final_path)
        if folder is None or not source.is_file():
            return None
        target = folder / verdict / f"{row.id}-{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        return target


def _row_from(store: Store, fields: dict[str, list[str]]) -> Inspection | None:
    try:
        return get_row(store, int((fields.get("id") or [""])[0]))
    except ValueError:
        return None


# -- HTML ---------------------------------------------------------------------------------------
STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}
form.filter{margin-bottom:1em}form.filter *{margin-right:.5em}
table{border-collapse:collapse}
td,th{border-bottom:1px solid #ccc;padding:.4em;text-align:left;vertical-align:top}
img{width:160px;height:auto;border:1px solid #aaa}.rejected{color:#b00}.quarantined{color:#a60}
.done{background:#e8f5e9;padding:.5em}button{margin:.2em}
"""


def render_page(
    found: list[Reviewed], lines: list[str], q: dict[str, str], keep: dict[str, str], done: str | None
) -> str:
    esc = html.escape
    options = "".join(
        f'<option value="{esc(n)}"{" selected" if q.get("line") == n else ""}>{esc(n)}</option>'
        for n in lines
    )
    statuses = "".join(
        f'<option value="{s}"{" selected" if q.get("status", "both") == s else ""}>{s}</option>'
        for s in STATUS_CHOICES
    )
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in keep.items())
    rows = (
        "".join(_row_html(item, q, keep) for item in found)
        or '<tr><td colspan="6">nothing to review</td></tr>'
    )
    notice = f'<p class="done" id="done">label saved for inspection {esc(done)}</p>' if done else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>inspectd review</title><style>{STYLE}</style></head>
<body><h1>inspectd review: rejects and quarantined files</h1>{notice}
<form class="filter" method="get" action="/review">{hidden}
line <select name="line"><option value="">all</option>{options}</select>
status <select name="status">{statuses}</select>
since <input name="since" value="{esc(q.get("since", ""))}" placeholder="24h or 2026-12-01T06:00" size="18">
<button type="submit">show</button></form>
<table><tr><th>id</th><th>decided (UTC)</th><th>line</th><th>verdict</th><th>capture / heatmap</th>
<th>operator</th></tr>{rows}</table></body></html>
"""


def _row_html(item: Reviewed, q: dict[str, str], keep: dict[str, str]) -> str:
    esc = html.escape
    row = item.row
    link = urlencode({"id": row.id, **keep})
    images = f'<img alt="capture {row.id}" src="/review/image?{link}">'
    if row.heatmap_path:
        images += f' <img alt="heatmap {row.id}" src="/review/image?{link}&amp;kind=heatmap">'
    verdict = f'<span class="{row.status}">{row.status}</span>'
    if row.score is not None:
        verdict += f"<br>score {row.score:.4f} (threshold {row.threshold:.4f})"
    if row.error:
        verdict += f"<br>{esc(row.error)}"
    labelled = (
        f"marked <b>{LABEL_TEXT[item.label.label]}</b> by {esc(item.label.labelled_by)}"
        if item.label is not None
        else "not labelled"
    )
    carried = {**{k: q[k] for k in ("line", "status", "since") if q.get(k)}, **keep}
    hidden = "".join(f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in carried.items())
    buttons = "".join(
        f'<button type="submit" name="label" value="{value}" id="{value}-{row.id}">{text}</button>'
        for value, text in LABEL_TEXT.items()
    )
    form = (
        f'<form method="post" action="/review/label"><input type="hidden" name="id" value="{row.id}">'
        f'{hidden}<input name="by" placeholder="your name" size="10">{buttons}</form>'
    )
    decided = str(row.decided_at)[:19]
    return (
        f'<tr id="row-{row.id}"><td>{row.id}</td><td>{decided}</td><td>{esc(row.line)}</td>'
        f"<td>{verdict}</td><td>{images}<br>{esc(row.filename)}</td><td>{labelled}{form}</td></tr>"
    )
