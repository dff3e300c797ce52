"""Page assembly: the HTML shell, its inline CSS and JS, tables, and the data the page's JS reads.

No framework and nothing fetched: the CSS and JS are inline, the data is one JSON script element, and the
pictures are relative files. The per-image hover data of the image browser is a small script per image
(``report_files/data/<key>.js``), added to the page when the image is opened: a ``<script src>`` loads
from ``file://`` where ``fetch`` may not (Chromium refuses it).

The page checks itself with ``report.html?selftest=1``: after load it sorts a table, hovers a segment,
flips the order toggle and writes a JSON verdict, with every error the page logged, into
``<pre id="selftest">`` (what ``tests/test_report.py`` reads from headless Chromium and Firefox);
``?selftest=top`` puts the verdict at the top of the page, for a screenshot.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable, Optional, Sequence

Cell = Any  # str (text), Raw (HTML), (text, sort value) for a number, or None (an empty cell)


class Raw(str):
    """A table cell or text that is HTML already (not escaped)."""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def json_for_script(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>`` or ``&`` that could end the element."""
    return (json.dumps(data, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def clean(value: Any) -> Any:
    """``value`` with NaN/inf floats as None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def pct(value: Optional[float], digits: int = 2, signed: bool = False) -> Cell:
    """A fraction as a percentage cell (sortable by its value); None stays empty."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    text = f"{100 * value:+.{digits}f}" if signed else f"{100 * value:.{digits}f}"
    return (text, round(100 * float(value), 6))


def num(value: Optional[float], digits: int = 0, signed: bool = False) -> Cell:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return (text, float(value))


def table(headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[Cell]], *, table_id: str = "",
          sortable: bool = True, groups: Sequence[tuple[str, int]] = (), signed_columns: Sequence[int] = (),
          selftest_column: Optional[int] = None, row_attrs: Optional[Sequence[str]] = None, cls: str = "") -> str:
    """An HTML table. ``headers``: (label, "num" or "text"); ``groups``: an optional first header row of
    (label, colspan); cells of ``signed_columns`` are coloured by sign. A sortable table sorts on a click
    on any header of the last row; ``selftest_column`` is the one the self-test clicks."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    attrs = f' id="{esc(table_id)}"' if table_id else ""
    attrs += f' class="{classes}"' if classes else ""
    attrs += " data-selftest" if selftest_column is not None else ""
    out = [f"<table{attrs}><thead>"]
    if groups:
        out.append("<tr class=\"groups\">" + "".join(
            f'<th colspan="{span}">{esc(label)}</th>' for label, span in groups) + "</tr>")
    cells = []
    for k, (label, kind) in enumerate(headers):
        extra = ' data-selftest="1"' if k == selftest_column else ""
        cells.append(f'<th data-col="{k}" data-type="{kind}"{extra}>{label}</th>')
    out.append("<tr>" + "".join(cells) + "</tr></thead><tbody>")
    signed = set(signed_columns)
    for r, row in enumerate(rows):
        tds = []
        for k, cell in enumerate(row):
            if cell is None:
                tds.append("<td></td>")
            elif isinstance(cell, tuple):
                text, value = cell
                sign = ""
                if k in signed and value:
                    sign = ' class="pos"' if value > 0 else ' class="neg"'
                tds.append(f'<td data-v="{value}"{sign}>{esc(text)}</td>')
            else:
                tds.append(f"<td>{cell if isinstance(cell, Raw) else esc(cell)}</td>")
        extra = f" {row_attrs[r]}" if row_attrs is not None and row_attrs[r] else ""
        out.append(f"<tr{extra}>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def section(section_id: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{note_html}{body}</section>'


def page(title: str, subtitle: str, sections: Sequence[str], data: Optional[dict] = None) -> str:
    """The whole document: head with the CSS and the error recorder, the sections, the data, the JS."""
    nav = "".join(
        f'<a href="#{esc(sid)}">{esc(label)}</a>' for sid, label in _nav(sections))
    data_html = (f'<script type="application/json" id="report-data">{json_for_script(clean(data))}</script>'
                 if data is not None else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{EARLY_JS}</script></head><body>"
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">{subtitle}</p><nav>{nav}</nav></header><main>"
        + "".join(sections)
        + "</main><footer>Written by oanet. Sort a table by clicking its header; hover a picture to name its "
        "segments. <code>?sort=differ&amp;image=NAME</code> opens the page so; <code>?selftest=1</code> checks it.</footer>"
        "<pre id=\"selftest\" hidden></pre><div id=\"tip\" hidden></div>"
        + data_html + f"<script>{JS}</script></body></html>\n"
    )


def _nav(sections: Sequence[str]) -> list[tuple[str, str]]:
    import re

    return re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', "".join(sections))


CSS = """
:root{--fg:#1d2126;--mute:#5d6673;--line:#d9dde3;--bg:#fff;--soft:#f4f6f8;--pos:#127a3a;--neg:#b3261e;--acc:#1f5fbf}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:14px 22px 8px;border-bottom:1px solid var(--line);background:var(--soft)}
h1{font-size:20px;margin:0 0 2px}h2{font-size:16px;margin:0 0 8px}.sub{margin:0;color:var(--mute)}
nav{margin-top:6px}nav a{margin-right:14px;color:var(--acc);text-decoration:none}
main{padding:6px 22px 30px;max-width:1500px}section{margin:18px 0 26px}.note{color:var(--mute);margin:0 0 8px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}th{background:var(--soft);font-weight:600;position:sticky;top:0}
tr.groups th{text-align:center;border-left:1px solid var(--line)}
table.sortable th[data-col]{cursor:pointer;user-select:none}table.sortable th[data-col]:hover{color:var(--acc)}
th[data-dir=asc]::after{content:" \\25B2";font-size:9px}th[data-dir=desc]::after{content:" \\25BC";font-size:9px}
td.pos{color:var(--pos)}td.neg{color:var(--neg)}td.name{text-align:left}
.scroll{max-height:460px;overflow:auto;border:1px solid var(--line);display:inline-block;max-width:100%}
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{width:172px;border:1px solid var(--line);border-radius:4px;padding:5px;cursor:pointer;background:#fff}
.card:hover,.card.on{border-color:var(--acc);box-shadow:0 0 0 1px var(--acc)}.card img{width:160px;height:auto;display:block;background:#222}
.card .cap{font-size:11.5px;color:var(--mute);margin-top:3px;line-height:1.3;word-break:break-all}.card .cap b{color:var(--fg)}
.controls{margin:6px 0 10px;display:flex;gap:12px;align-items:center;flex-wrap:wrap}select,button{font:inherit}
.toggle button{border:1px solid var(--line);background:#fff;padding:3px 10px;margin-right:-1px;cursor:pointer}
.toggle button.on{background:var(--acc);color:#fff;border-color:var(--acc)}
#detail{border:1px solid var(--line);border-radius:6px;padding:10px 12px;margin-bottom:14px;background:var(--soft)}
#detail .head{display:flex;justify-content:space-between;align-items:baseline;gap:12px;flex-wrap:wrap;margin-bottom:8px}
#detail .views{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}
#main-view{margin:0;flex:0 0 auto}#main-view img{width:460px;max-width:calc(100vw - 90px);height:auto;display:block;background:#222}
.strip{display:flex;gap:8px;flex-wrap:wrap;flex:1 1 300px;align-content:flex-start}.strip figure{margin:0;cursor:pointer;width:calc(33% - 6px);min-width:150px;max-width:240px}
.strip figure.on figcaption{color:var(--acc);font-weight:600}.strip figure.on img{outline:2px solid var(--acc)}
.strip img{width:100%;height:auto;display:block;background:#222}figcaption{font-size:12px;color:var(--mute)}
#tip{position:fixed;z-index:9;pointer-events:none;background:rgba(20,22,26,.93);color:#fff;padding:5px 8px;border-radius:4px;font-size:12.5px;max-width:420px;line-height:1.35}
.kind{margin:8px 0;border:1px solid var(--line);border-radius:4px;padding:6px 10px}.kind summary{cursor:pointer}
.sev-error{color:var(--neg);font-weight:600}.sev-warning{color:#9a5b00;font-weight:600}.sev-info{color:var(--mute);font-weight:600}
.files{columns:3 260px;font-size:12.5px;margin:6px 0 0;padding-left:18px}.overlays{display:flex;flex-wrap:wrap;gap:10px}
.overlays figure{margin:0}.overlays img{max-width:440px;height:auto;display:block}
.facts td{text-align:left}.big{font-size:18px;font-weight:600}
#tip .tiphead{color:#b9c2cf;font-size:11.5px}
#selftest{white-space:pre-wrap;word-break:break-all;font-size:11px;color:var(--mute);padding:0 22px}
footer{color:var(--mute);font-size:12px;padding:12px 22px;border-top:1px solid var(--line)}
"""

# In the head: records every error from the start (scripts, failed pictures, console.error).
EARLY_JS = r"""
window.__oanetErrors=[];
window.addEventListener('error',function(e){var t=e.target;if(t&&t!==window&&t.tagName){window.__oanetErrors.push('failed to load '+(t.currentSrc||t.src||t.href));}else{window.__oanetErrors.push(String(e.message)+' at '+e.filename+':'+e.lineno);}},true);
window.addEventListener('unhandledrejection',function(e){window.__oanetErrors.push('unhandled rejection: '+e.reason);});
(function(){var f=console.error;console.error=function(){window.__oanetErrors.push(Array.prototype.map.call(arguments,String).join(' '));return f.apply(console,arguments);};})();
"""

JS = r"""
(function(){
"use strict";
const ERR = window.__oanetErrors;
const $ = (s, r) => (r || document).querySelector(s);
const $$ = (s, r) => Array.from((r || document).querySelectorAll(s));
const el = (tag, attrs, html) => { const e = document.createElement(tag); for (const k in (attrs || {})) e.setAttribute(k, attrs[k]); if (html !== undefined) e.innerHTML = html; return e; };
const esc = s => String(s).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const dataEl = document.getElementById('report-data');
const R = dataEl ? JSON.parse(dataEl.textContent) : null;

/* ---- sortable tables ---- */
function cellValue(td, isNum) {
  if (!td) return null;
  const v = td.dataset.v;
  if (isNum) { const x = parseFloat(v !== undefined ? v : td.textContent); return isNaN(x) ? null : x; }
  return (v !== undefined ? v : td.textContent).toLowerCase();
}
function sortTable(table, th) {
  const col = +th.dataset.col, isNum = th.dataset.type === 'num';
  const dir = th.dataset.dir === 'desc' ? 'asc' : th.dataset.dir === 'asc' ? 'desc' : (isNum ? 'desc' : 'asc');
  $$('th[data-col]', table).forEach(h => { delete h.dataset.dir; });
  th.dataset.dir = dir;
  const body = table.tBodies[0];
  const keyed = Array.from(body.rows).map((r, i) => [cellValue(r.cells[col], isNum), i, r]);
  keyed.sort((a, b) => {
    if (a[0] === b[0]) return a[1] - b[1];
    if (a[0] === null) return 1;
    if (b[0] === null) return -1;
    return (a[0] < b[0] ? -1 : 1) * (dir === 'asc' ? 1 : -1);
  });
  const frag = document.createDocumentFragment();
  keyed.forEach(k => frag.appendChild(k[2]));
  body.appendChild(frag);
}
document.addEventListener('click', e => {
  const th = e.target.closest('table.sortable th[data-col]');
  if (th) sortTable(th.closest('table'), th);
});

/* ---- image browser ---- */
const B = {cache: {}, maps: {}, current: null, show: null, filter: null, waiting: {}};
window.OANET_REPORT_DATA = function (key, data) { B.cache[key] = data; (B.waiting[key] || []).forEach(f => f()); delete B.waiting[key]; };
function title(o) { return (R.titles && R.titles[o]) || o; }
function fmt(x, d) { return x === null || x === undefined ? '\u2013' : (100 * x).toFixed(d === undefined ? 1 : d); }
function loadData(key) {
  return new Promise((resolve, reject) => {
    if (B.cache[key]) return resolve(B.cache[key]);
    (B.waiting[key] = B.waiting[key] || []).push(() => resolve(B.cache[key]));
    if (B.waiting[key].length > 1) return;
    const s = el('script', {src: R.assets + 'data/' + encodeURIComponent(key) + '.js'});
    s.onerror = () => { reject(new Error('no data for ' + key)); };
    document.body.appendChild(s);
  });
}
function decodeMap(b64, n) {
  const bin = atob(b64), out = new Int32Array(n);
  let i = 0, pos = 0;
  const next = () => { let v = 0, s = 1, b; do { b = bin.charCodeAt(i++); v += (b & 127) * s; s *= 128; } while (b & 128); return v; };
  while (i < bin.length && pos < n) { const v = next(), run = next(); out.fill(v, pos, pos + run); pos += run; }
  return out;
}
function mapOf(key, kind) {
  const id = key + '/' + kind;
  if (!B.maps[id]) { const d = B.cache[key]; B.maps[id] = decodeMap(d.maps[kind], d.w * d.h); }
  return B.maps[id];
}
function segmentAt(key, kind, x, y) {
  const d = B.cache[key], m = mapOf(key, kind), k = m[y * d.w + x];
  return k ? d.segs[kind][k - 1] : null;
}
function describe(kind, s) {
  if (!s) return 'void';
  const cat = R.cats[s[1]] || [String(s[1]), 1];
  let t = '<b>' + esc(cat[0]) + '</b> ' + (cat[1] ? 'thing' : 'stuff') + ' \u00b7 id ' + s[0] + ' \u00b7 area ' + s[2] + ' px';
  if (kind === 'gt') { if (s[3]) t += ' \u00b7 crowd'; return t; }
  if (cat[1]) {
    t += ' \u00b7 detection score ' + (s[3] === null || s[3] === undefined ? 'not recorded' : s[3].toFixed(3));
    t += ' \u00b7 ranking score ' + (s[4] === null || s[4] === undefined ? 'not recorded' : s[4].toFixed(3));
  }
  return t;
}
function onMove(e) {
  const img = e.currentTarget, kind = img.dataset.p, key = B.current, d = B.cache[key], tip = $('#tip');
  const r = img.getBoundingClientRect();
  const fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
  if (!d || fx < 0 || fy < 0 || fx >= 1 || fy >= 1) { tip.hidden = true; return; }
  const x = Math.floor(fx * d.w), y = Math.floor(fy * d.h);
  let lines;
  if (kind === 'diff') lines = d.pair.map(o => esc(title(o)) + ': ' + describe(o, segmentAt(key, o, x, y)));
  else lines = [describe(kind, segmentAt(key, kind, x, y))];
  tip.innerHTML = '<div class="tiphead">' + esc(kind === 'gt' ? 'ground truth' : kind === 'diff' ? 'where the orders disagree' : title(kind)) + ' \u00b7 (' + x + ', ' + y + ')</div>' + lines.join('<br>');
  tip.hidden = false;
  tip.style.left = Math.max(0, Math.min(e.clientX + 14, document.documentElement.clientWidth - 440)) + 'px';
  tip.style.top = (e.clientY + 16) + 'px';
}
function panelTitle(kind) { return kind === 'gt' ? 'ground truth' : kind === 'diff' ? 'orders disagree (' + R.pair.map(title).join(' vs ') + ')' : title(kind); }
function show(kind) {
  const d = B.cache[B.current];
  if (!d || !d.panels[kind]) return;
  B.show = kind;
  const main = $('#main-img');
  main.src = R.assets + d.panels[kind];
  main.dataset.p = kind;
  main.alt = panelTitle(kind);
  $('#main-cap').textContent = panelTitle(kind);
  $$('#toggle button').forEach(b => b.classList.toggle('on', b.dataset.p === kind));
  $$('#strip figure').forEach(f => f.classList.toggle('on', f.dataset.p === kind));
}
function imageEntry(key) { return R.images.find(im => im.k === key); }
function pqLine(im) {
  const parts = R.orders.map(o => esc(title(o)) + ' ' + fmt(im.pq ? im.pq[o] : null));
  let t = R.has_gt ? 'PQ ' + parts.join(' \u00b7 ') : '';
  if (im.d !== null && im.d !== undefined) t += (t ? ' \u00b7 ' : '') + fmt(im.d) + '% of pixels differ between the orders';
  return t;
}
function openImage(key) {
  B.current = key;
  $$('.card').forEach(c => c.classList.toggle('on', c.dataset.k === key));
  const box = $('#detail');
  box.hidden = false;
  box.innerHTML = '<div class="head"><span class="big">' + esc(imageEntry(key).n) + '</span><span>loading\u2026</span></div>';
  return loadData(key).then(d => {
    if (B.current !== key) return d;
    const im = imageEntry(key);
    const kinds = Object.keys(d.panels);
    let html = '<div class="head"><span class="big">' + esc(im.n) + '</span><span>' + pqLine(im) + '</span></div>';
    html += '<div class="controls"><span>show:</span><span class="toggle" id="toggle">' + kinds.map(k => '<button type="button" data-p="' + k + '">' + esc(panelTitle(k)) + '</button>').join('') + '</span><span class="note">\u2190 \u2192 flip \u00b7 hover a picture</span></div>';
    html += '<div class="views"><figure id="main-view"><img id="main-img" width="' + d.pw + '" height="' + d.ph + '" alt=""><figcaption id="main-cap"></figcaption></figure><div class="strip" id="strip">';
    html += kinds.map(k => '<figure data-p="' + k + '"><img data-p="' + k + '" src="' + R.assets + d.panels[k] + '" width="' + d.pw + '" height="' + d.ph + '" alt="' + esc(panelTitle(k)) + '"><figcaption>' + esc(panelTitle(k)) + '</figcaption></figure>').join('');
    html += '</div></div>';
    box.innerHTML = html;
    $$('#toggle button').forEach(b => b.addEventListener('click', () => show(b.dataset.p)));
    $$('#strip figure').forEach(f => f.addEventListener('click', () => show(f.dataset.p)));
    $$('#detail img').forEach(img => { img.addEventListener('mousemove', onMove); img.addEventListener('mouseleave', () => { $('#tip').hidden = true; }); });
    show(B.show && d.panels[B.show] ? B.show : R.main);
    return d;
  });
}
function sorted() {
  const key = $('#sort').value, main = R.main;
  const pqOf = (im, o) => (im.pq && im.pq[o] !== null && im.pq[o] !== undefined) ? im.pq[o] : NaN;
  const cmp = {
    worst: (a, b) => pqOf(a, main) - pqOf(b, main),
    best: (a, b) => pqOf(b, main) - pqOf(a, main),
    gain: (a, b) => (pqOf(b, R.pair[1]) - pqOf(b, R.pair[0])) - (pqOf(a, R.pair[1]) - pqOf(a, R.pair[0])),
    loss: (a, b) => (pqOf(a, R.pair[1]) - pqOf(a, R.pair[0])) - (pqOf(b, R.pair[1]) - pqOf(b, R.pair[0])),
    differ: (a, b) => (b.d || 0) - (a.d || 0),
    name: (a, b) => a.n < b.n ? -1 : a.n > b.n ? 1 : 0,
  }[key];
  const list = R.images.filter(im => B.filter === null || (im.c || []).indexOf(B.filter) >= 0);
  return list.slice().sort((a, b) => { const c = cmp(a, b); return isNaN(c) ? (isNaN(cmp(a, a)) ? 1 : -1) : c; });
}
function renderCards() {
  const box = $('#cards');
  const list = sorted();
  const frag = document.createDocumentFragment();
  for (const im of list) {
    const c = el('div', {class: 'card', 'data-k': im.k});
    let cap = '<b>' + esc(im.n) + '</b><br>';
    if (R.has_gt) cap += 'PQ ' + R.orders.map(o => fmt(im.pq[o])).join(' / ');
    if (R.has_gt && R.pair.length === 2 && im.pq[R.pair[0]] !== null && im.pq[R.pair[1]] !== null) {
      const g = im.pq[R.pair[1]] - im.pq[R.pair[0]];
      cap += ' <span style="color:' + (g > 0 ? 'var(--pos)' : g < 0 ? 'var(--neg)' : 'inherit') + '">(' + (g >= 0 ? '+' : '') + (100 * g).toFixed(1) + ')</span>';
    }
    if (im.d !== null && im.d !== undefined) cap += (R.has_gt ? '<br>' : '') + fmt(im.d) + '% differ';
    c.innerHTML = '<img loading="lazy" src="' + R.assets + im.t + '" width="' + im.tw + '" height="' + im.th + '" alt="">' + '<div class="cap">' + cap + '</div>';
    c.addEventListener('click', () => { openImage(im.k); $('#detail').scrollIntoView({block: 'nearest'}); });
    frag.appendChild(c);
  }
  box.innerHTML = '';
  box.appendChild(frag);
  $('#shown').textContent = list.length + ' of ' + R.total + ' images shown' + (B.filter !== null ? ' (with ' + (R.cats[B.filter] || [B.filter])[0] + ' in the ground truth)' : '');
  $('#clear').hidden = B.filter === null;
  $$('.card').forEach(c => c.classList.toggle('on', c.dataset.k === B.current));
  return list;
}
function setFilter(cat) { B.filter = cat; const list = renderCards(); if (list.length && !list.some(im => im.k === B.current)) openImage(list[0].k); }
function renderRest() {
  const t = $('#all-table');
  if (!t || t.dataset.done) return;
  t.dataset.done = '1';
  const shown = new Set(R.images.map(im => im.n));
  const frag = document.createDocumentFragment();
  for (const row of R.all) {
    const tr = document.createElement('tr');
    let h = '<td>' + esc(row[0]) + (shown.has(row[0]) ? ' <a href="#browser" data-open="' + esc(row[0]) + '">show</a>' : '') + '</td>';
    for (let k = 1; k < row.length; k++) {
      const v = row[k];
      h += v === null ? '<td></td>' : '<td data-v="' + v + '">' + (100 * v).toFixed(2) + '</td>';
    }
    tr.innerHTML = h;
    frag.appendChild(tr);
  }
  t.tBodies[0].appendChild(frag);
}
function initBrowser() {
  if (!R || !R.images) return;
  const sort = $('#sort'), params = new URLSearchParams(location.search);
  if (Array.from(sort.options).some(o => o.value === params.get('sort'))) sort.value = params.get('sort');
  sort.addEventListener('change', renderCards);
  $('#clear').addEventListener('click', () => setFilter(null));
  $$('tr[data-cat]').forEach(tr => { const a = tr.querySelector('a.cat'); if (a) a.addEventListener('click', e => { e.preventDefault(); setFilter(+tr.dataset.cat); $('#browser').scrollIntoView(); }); });
  const rest = $('#all-images');
  if (rest) rest.addEventListener('toggle', renderRest);
  document.addEventListener('click', e => {
    const a = e.target.closest('a[data-open]');
    if (!a) return;
    const im = R.images.find(i => i.n === a.dataset.open);
    if (im) { e.preventDefault(); openImage(im.k); $('#browser').scrollIntoView(); }
  });
  document.addEventListener('keydown', e => {
    if (!B.current || !B.cache[B.current] || (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft')) return;
    const kinds = Object.keys(B.cache[B.current].panels), i = kinds.indexOf(B.show);
    show(kinds[(i + (e.key === 'ArrowRight' ? 1 : kinds.length - 1)) % kinds.length]);
  });
  const list = renderCards();
  B.readyMs = performance.now();
  const wanted = R.images.find(im => im.n === params.get('image')) || list[0];
  if (wanted) openImage(wanted.k).catch(err => console.error(String(err)));
}

/* ---- self-test: ?selftest=1 ---- */
const nextFrame = () => new Promise(r => setTimeout(r, 30));
function imagesLoaded(imgs) {
  return Promise.all(imgs.map(img => img.complete ? Promise.resolve() : new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
}
async function selftest() {
  const out = {ok: false, checks: {}, errors: ERR};
  const t = performance.timing;
  out.timing = {dom_content_loaded_ms: t.domContentLoadedEventEnd - t.navigationStart, load_ms: t.loadEventStart - t.navigationStart, browser_ready_ms: B.readyMs === undefined ? null : Math.round(B.readyMs), html_bytes: document.documentElement.outerHTML.length};
  try {
    const table = $('table.sortable[data-selftest]');
    if (table) {
      const th = $('th[data-selftest]', table), col = +th.dataset.col;
      const names = () => Array.from(table.tBodies[0].rows).map(r => r.cells[0].textContent);
      const values = () => Array.from(table.tBodies[0].rows).map(r => cellValue(r.cells[col], true)).filter(v => v !== null);
      const isSorted = (vs, desc) => vs.every((v, i) => i === 0 || (desc ? vs[i - 1] >= v : vs[i - 1] <= v));
      const before = names();
      th.click();
      const first = names(), firstSorted = isSorted(values(), th.dataset.dir === 'desc');
      th.click();
      const second = names(), secondSorted = isSorted(values(), th.dataset.dir === 'desc');
      const distinct = new Set(values()).size > 1;
      const sameRows = before.slice().sort().join() === second.slice().sort().join();
      out.checks.sort = {table: table.id, column: th.textContent, rows: second.length, sorted: firstSorted && secondSorted,
                         reordered: first.join('|') !== second.join('|'), same_rows: sameRows,
                         ok: firstSorted && secondSorted && sameRows && (first.join('|') !== second.join('|') || !distinct)};
      th.click();
    }
    if (R && R.images && R.images.length) {
      while (!B.current || !B.cache[B.current] || !$('#main-img')) await nextFrame();
      const key = B.current, d = B.cache[key], kind = R.main;
      await imagesLoaded($$('#detail img'));
      const buttons = $$('#toggle button'), main = $('#main-img');
      if (buttons.length > 1) {
        const target = buttons.find(b => b.dataset.p === kind && b !== buttons[0]) || buttons[1];
        buttons[0].click();
        const first = main.getAttribute('src');
        target.click();
        const second = main.getAttribute('src');
        await imagesLoaded([main]);
        out.checks.toggle = {from: first, to: second, shown: main.dataset.p, ok: first !== second && second === R.assets + d.panels[target.dataset.p] && main.naturalWidth > 0};
      }
      show(kind);
      /* hover the largest thing segment of the main order (else the largest segment), at a pixel inside it */
      const m = mapOf(key, kind), counts = {}, segs = d.segs[kind];
      for (let i = 0; i < m.length; i++) counts[m[i]] = (counts[m[i]] || 0) + 1;
      let best = 0, bestN = 0;
      for (const thing of [1, 0]) {
        for (const k in counts) if (+k > 0 && counts[k] > bestN && (R.cats[segs[k - 1][1]] || [0, 1])[1] === thing) { best = +k; bestN = counts[k]; }
        if (best) break;
      }
      let px = -1;
      for (let y = 1; y < d.h - 1 && px < 0; y++) for (let x = 1; x < d.w - 1; x++) {
        const i = y * d.w + x;
        if (m[i] === best && m[i - 1] === best && m[i + 1] === best && m[i - d.w] === best && m[i + d.w] === best) { px = i; break; }
      }
      if (px < 0) px = m.indexOf(best);
      if (!best) { out.checks.hover = {ok: true, skipped: 'no segment in the ' + kind + ' picture'}; }
      else {
      const x = px % d.w, y = Math.floor(px / d.w), r = main.getBoundingClientRect();
      main.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + (x + 0.5) * r.width / d.w, clientY: r.top + (y + 0.5) * r.height / d.h, bubbles: true}));
      const seg = segs[best - 1], name = (R.cats[seg[1]] || [String(seg[1])])[0];
      const tip = $('#tip').textContent;
      out.checks.hover = {image: imageEntry(key).n, order: kind, pixel: [x, y], segment_id: seg[0], category: name, tooltip: tip, ok: !$('#tip').hidden && tip.indexOf(name) >= 0 && tip.indexOf('id ' + seg[0] + ' ') >= 0};
      }
      const broken = $$('#detail img').filter(i => i.complete && i.naturalWidth === 0).map(i => i.getAttribute('src'));
      out.checks.pictures = {count: $$('#detail img').length, broken: broken, ok: broken.length === 0};
    }
    const all = $('#all-table');
    if (all) {
      renderRest();
      out.checks.all_images = {rows: all.tBodies[0].rows.length, ok: all.tBodies[0].rows.length === R.total};
    }
    out.ok = ERR.length === 0 && Object.values(out.checks).every(c => c.ok);
  } catch (e) {
    out.exception = String(e && e.stack || e);
  }
  out.layout = {scroll_width: document.documentElement.scrollWidth, window_width: window.innerWidth};
  const pre = $('#selftest');
  pre.textContent = JSON.stringify(out);
  pre.hidden = false;
  if (new URLSearchParams(location.search).get('selftest') === 'top') document.body.prepend(pre);  /* for a screenshot */
}
function start() {
  try { initBrowser(); } catch (e) { console.error('report: ' + (e && e.stack || e)); }
  if (new URLSearchParams(location.search).has('selftest')) setTimeout(selftest, 50);
}
if (document.readyState === 'complete') start(); else window.addEventListener('load', start);
})();
"""
