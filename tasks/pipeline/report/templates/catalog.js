"use strict";
// The catalog table (site.py): rows come as JSON; sorting and filtering work on precomputed
// keys and an index array, and only one page of rows is ever in the DOM.
// URL state: #q=words, #lang=es, #base=..., #multiple=64, #sort=label or #sort=-label.
(function () {
  const data = JSON.parse(document.getElementById('catalog-data').textContent);
  const cols = data.columns, pageRows = data.pageRows, fields = data.fields;
  const rows = data.rows.map(a => { const r = {}; fields.forEach((f, i) => { r[f] = a[i]; }); return r; });
  const n = rows.length;
  const table = document.getElementById('catalog'), tbody = table.tBodies[0];
  const q = document.getElementById('q'), count = document.getElementById('count');
  const pageLabel = document.getElementById('page');
  const selects = Array.from(document.querySelectorAll('#filters select'));
  const heads = Array.from(table.tHead.rows[0].cells).filter(th => th.dataset.i !== undefined);
  const open = new Set();  // variant ids whose details are shown

  // Filter tokens: whole values (base, each language, multiple, v<multiple>, the text columns)
  // and the variant id, matched on whole '-'-separated parts ("toy-a", "en" in toy-a-en-v8).
  const tokens = rows.map(r => {
    const vals = [r.base, ...r.langs, String(r.multiple), 'v' + r.multiple, r.failed ? 'failed' : 'published'];
    r.t.forEach((t, i) => { if (!cols[i].num && typeof t === 'string') vals.push(t); });
    return '\n' + vals.join('\n').toLowerCase() + '\n';
  });
  const ids = rows.map(r => '-' + r.id.toLowerCase() + '-');
  const langSets = rows.map(r => new Set(r.langs));
  const keys = new Map();  // column index -> Float64Array of sort keys (text: collation rank), NaN missing

  function sortKeys(i) {
    if (keys.has(i)) return keys.get(i);
    const k = new Float64Array(n);
    const value = i < 0 ? (r => r.id) : cols[i].num ? (r => r.v[i]) : (r => r.t[i] === cols[i].missing ? null : r.t[i]);
    if (i >= 0 && cols[i].num) {
      for (let j = 0; j < n; j++) { const v = value(rows[j]); k[j] = v === null ? NaN : v; }
    } else {
      const coll = new Intl.Collator(undefined, {numeric: true});
      const idx = Array.from({length: n}, (_, j) => j).sort((a, b) => {
        const x = value(rows[a]), y = value(rows[b]);
        if (x === null) return y === null ? 0 : 1; if (y === null) return -1;
        return coll.compare(x, y);
      });
      idx.forEach((j, rank) => { k[j] = value(rows[j]) === null ? NaN : rank; });
    }
    keys.set(i, k);
    return k;
  }

  let order = Array.from({length: n}, (_, j) => j), shown = order, page = 0;
  let sortCol = null, sortDesc = false;
  const ok = new Uint8Array(n).fill(1);

  function applyFilter() {
    const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    const want = {};
    selects.forEach(s => { want[s.dataset.key] = s.value; });
    for (let j = 0; j < n; j++) {
      const r = rows[j];
      ok[j] = (!want.lang || langSets[j].has(want.lang)) && (!want.base || r.base === want.base)
        && (!want.multiple || String(r.multiple) === want.multiple)
        && words.every(w => tokens[j].includes('\n' + w + '\n') || ids[j].includes('-' + w + '-')) ? 1 : 0;
    }
    page = 0;
    update();
  }

  function sortBy(i, desc) {
    const k = sortKeys(i), sign = desc ? -1 : 1;
    order = Array.from({length: n}, (_, j) => j).sort((a, b) => {
      const x = k[a], y = k[b];
      if (x !== x) return y !== y ? a - b : 1; if (y !== y) return -1;  // missing values last
      return x === y ? a - b : sign * (x - y);
    });
    sortCol = i; sortDesc = desc;
    heads.forEach(th => th.classList.remove('asc', 'desc'));
    const th = heads.find(t => Number(t.dataset.i) === i);
    if (th) th.classList.add(desc ? 'desc' : 'asc');
    update();
  }

  function cell(tr, text, cls) {
    const td = tr.insertCell();
    if (cls) td.className = cls;
    if (Array.isArray(text)) {  // [value, tag]: e.g. a held-out figure on synthetic text
      td.textContent = text[0];
      const tag = document.createElement('small'); tag.className = 'tag'; tag.textContent = text[1];
      td.appendChild(tag);
    } else td.textContent = text;
    return td;
  }

  function link(parent, href, text) {
    const a = document.createElement('a'); a.href = href; a.textContent = text; parent.appendChild(a);
  }

  function details(r) {
    const tr = document.createElement('tr'); tr.className = 'details';
    const td = tr.insertCell(); td.colSpan = cols.length + 2;
    const dl = document.createElement('dl');
    const add = (label, value) => {
      const dt = document.createElement('dt'); dt.textContent = label;
      const dd = document.createElement('dd'); dd.textContent = value; dl.append(dt, dd);
    };
    data.details.forEach((label, i) => add(label, r.d[i]));
    if (r.err) add('error', r.err);
    td.appendChild(dl);
    return tr;
  }

  function row(r) {
    const tr = document.createElement('tr');
    if (r.failed) tr.className = 'failed';
    const first = tr.insertCell(); first.dataset.v = r.id;
    const more = document.createElement('button'); more.type = 'button'; more.className = 'more';
    more.textContent = open.has(r.id) ? '▾' : '▸'; more.title = 'details';
    more.addEventListener('click', () => { open.has(r.id) ? open.delete(r.id) : open.add(r.id); render(); });
    first.appendChild(more);
    if (r.card) link(first, data.cards + r.id + '.html', r.id); else first.appendChild(document.createTextNode(r.id));
    r.t.forEach((t, i) => cell(tr, t, cols[i].num ? 'n' : ''));
    const links = tr.insertCell();
    if (r.loc) {
      const remote = /^https?:/.test(r.loc);
      link(links, remote ? r.loc : r.loc + '/', 'files');
      if (!remote) { links.appendChild(document.createTextNode(' · ')); link(links, r.loc + '/coverage.png', 'plot'); }
    }
    if (r.err) { const s = document.createElement('span'); s.className = 'err'; s.title = r.err; s.textContent = 'error'; links.appendChild(s); }
    return tr;
  }

  function render() {
    const pages = Math.max(1, Math.ceil(shown.length / pageRows));
    page = Math.min(page, pages - 1);
    const frag = document.createDocumentFragment();
    for (const j of shown.slice(page * pageRows, (page + 1) * pageRows)) {
      frag.appendChild(row(rows[j]));
      if (open.has(rows[j].id)) frag.appendChild(details(rows[j]));
    }
    tbody.replaceChildren(frag);
    count.textContent = shown.length + ' of ' + n + ' variants';
    pageLabel.textContent = 'page ' + (page + 1) + ' of ' + pages;
    document.getElementById('prev').disabled = page === 0;
    document.getElementById('next').disabled = page >= pages - 1;
  }

  function update() {
    shown = order.filter(j => ok[j]);
    render();
    const parts = [];
    if (q.value.trim()) parts.push('q=' + encodeURIComponent(q.value.trim()));
    selects.forEach(s => { if (s.value) parts.push(s.dataset.key + '=' + encodeURIComponent(s.value)); });
    if (sortCol !== null) {
      const th = heads.find(t => Number(t.dataset.i) === sortCol);
      parts.push('sort=' + (sortDesc ? '-' : '') + encodeURIComponent(th.textContent));
    }
    const h = parts.length ? '#' + parts.join('&') : '';
    if (location.hash !== h) history.replaceState(null, '', h || location.pathname + location.search);
  }

  heads.forEach(th => {
    th.addEventListener('click', () => {
      const i = Number(th.dataset.i);
      sortBy(i, sortCol === i && !sortDesc);  // first click ascending, the next descending
    });
    th.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); th.click(); } });
  });
  q.addEventListener('input', applyFilter);
  selects.forEach(s => s.addEventListener('change', applyFilter));
  document.getElementById('prev').addEventListener('click', () => { page--; render(); });
  document.getElementById('next').addEventListener('click', () => { page++; render(); });

  const state = {};
  location.hash.replace(/^#/, '').split('&').filter(Boolean).forEach(p => {
    const at = p.indexOf('=');
    if (at > 0) state[p.slice(0, at)] = decodeURIComponent(p.slice(at + 1));
  });
  if (state.q) q.value = state.q;
  selects.forEach(s => { if (state[s.dataset.key] !== undefined) s.value = state[s.dataset.key]; });
  for (let j = 0; j < n; j++) ok[j] = 1;
  if (state.sort) {
    const desc = state.sort.startsWith('-'), label = desc ? state.sort.slice(1) : state.sort;
    const th = heads.find(t => t.textContent === label);
    if (th) { sortCol = Number(th.dataset.i); sortDesc = desc; }
  }
  if (sortCol !== null) sortBy(sortCol, sortDesc);
  applyFilter();
  window.trimworksCatalog = {ready: performance.now()};  // tests read when the first page was shown
})();
