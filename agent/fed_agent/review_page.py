"""The review page's HTML, its one stylesheet and its one script.

Why plain forms: every action is a POST of a small form (the image's SHA-256, the form
token, the button pressed), answered by a redirect to the page, which then shows the next
image. That works without JavaScript; the script (/review.js, served by the page itself)
only maps keys to the buttons: 1, 2, ... the labels in the config's order (the first nine),
s skip, x not usable. The Content-Security-Policy allows that script and that stylesheet
(by its hash) and nothing else: no inline script, no other origin, forms to the page only.

Every string on the page (labels, paths, reasons, notices) goes through html.escape; the
numbers are formatted here.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Optional

from fed_common.store import IndexEntry

QUEUE_SHOWN = 60  # thumbnails after the current image; the rest are counted
STYLE = ("body{font-family:sans-serif;margin:1em 1.5em;background:#f6f6f6} h1{font-size:20px}"
         " #current{background:#fff;border:1px solid #ccc;padding:12px;display:inline-block}"
         " #current img{display:block;max-width:640px;max-height:640px;margin-bottom:8px}"
         " button{font-size:16px;margin:4px 6px 4px 0;padding:6px 12px} kbd{font-weight:bold;color:#06c}"
         " .guess{font-size:16px} .reason{color:#666;font-size:13px} .notice{background:#ffd;padding:6px}"
         " #queue{list-style:none;padding:0;display:flex;flex-wrap:wrap}"
         " #queue li{margin:4px;width:164px;font-size:12px;text-align:center}"
         " #queue img{display:block;margin:0 auto 2px;max-width:160px;max-height:160px}")
SCRIPT = """\
"use strict";
// Keys for the buttons of the current image: each button names its key in data-key.
(function () {
  var sent = false;
  document.addEventListener("keydown", function (event) {
    if (sent || event.repeat || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var buttons = document.querySelectorAll("#actions button[data-key]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].getAttribute("data-key") === event.key.toLowerCase()) {
        sent = true;
        event.preventDefault();
        buttons[i].click();
        return;
      }
    }
  });
})();
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; script-src 'self'; style-src 'sha256-{_STYLE_HASH}'; "
                                "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make a browser send "Origin: null" with each form
    "X-Frame-Options": "DENY",
}


def confidence_text(entry: IndexEntry) -> str:
    guess = entry.prediction
    return f"{guess.label} {guess.confidence:.2f}"


def render_page(agent: str, queue: list[IndexEntry], labels: list[str], form_token: str,
                notice: Optional[str]) -> str:
    """The whole page: the current (first) image with its buttons, then the rest of the queue."""
    esc = html.escape
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
             f"<title>fed-agent review: {esc(agent)}</title>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<style>{STYLE}</style>", '<script src="/review.js" defer></script></head><body>',
             f'<h1>Review queue on {esc(agent)}: <span id="waiting">{len(queue)}</span> waiting</h1>']
    if notice:
        parts.append(f'<p class="notice" id="notice">{esc(notice)}</p>')
    if not queue:
        parts.append('<p id="empty">Nothing is waiting for review.</p></body></html>')
        return "".join(parts)
    parts.append(_current(queue[0], labels, form_token))
    rest = queue[1:QUEUE_SHOWN + 1]
    if rest:
        parts.append('<h2>Next, least confident first</h2><ol id="queue">')
        parts += [f'<li data-sha="{e.sha256}"><img src="/thumb/{e.sha256}.jpg" alt="">'
                  f'<span class="guess">{esc(confidence_text(e))}</span></li>' for e in rest]
        parts.append("</ol>")
    if len(queue) > QUEUE_SHOWN + 1:
        parts.append(f"<p>and {len(queue) - QUEUE_SHOWN - 1} more.</p>")
    parts.append("</body></html>")
    return "".join(parts)


def _current(entry: IndexEntry, labels: list[str], form_token: str) -> str:
    esc, guess = html.escape, entry.prediction
    buttons = [f'<button type="submit" name="label" value="{esc(label)}"'
               + (f' data-key="{i + 1}"><kbd>{i + 1}</kbd> ' if i < 9 else ">") + f"{esc(label)}</button>"
               for i, label in enumerate(labels)]
    buttons += ['<button type="submit" formaction="/skip" data-key="s"><kbd>s</kbd> skip</button>',
                '<button type="submit" formaction="/not-usable" data-key="x"><kbd>x</kbd> not usable</button>']
    return (f'<section id="current" data-sha="{entry.sha256}" data-path="{esc(entry.path)}">'
            f'<img src="/image/{entry.sha256}.jpg" alt="the image waiting for review">'
            f'<p class="guess">model v{guess.model_version} says <b id="guess">{esc(guess.label)}</b>, '
            f'confidence <b id="confidence">{guess.confidence:.2f}</b></p>'
            f'<p class="reason">data/{esc(entry.path)}' + (f": {esc(entry.reason)}" if entry.reason else "")
            + '</p><form id="actions" method="post" action="/label">'
            f'<input type="hidden" name="sha" value="{entry.sha256}">'
            f'<input type="hidden" name="csrf" value="{esc(form_token)}">' + "".join(buttons)
            + "</form></section>")


def render_message(title: str, text: str) -> str:
    """A short page for an answer that is not the queue (busy store, refused request)."""
    esc = html.escape
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p>{esc(text)}</p>'
            '<p><a href="/">Back to the queue</a></p></body></html>')
