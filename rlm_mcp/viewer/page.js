// The trace viewer's script (see page.py). It draws only what is on screen, so a page of 100k sub-calls
// stays responsive: the tree is a virtual list, details and timelines are drawn for the selected node only,
// and text from the trace reaches the page as text nodes, never as markup.
(() => {
  'use strict';
  const DATA = JSON.parse(document.getElementById('trace-data').textContent);
  const ROW = 22, OVERSCAN = 15, MAX_INDENT = 24, OPEN_CELL_UP_TO = 12, MAX_LANE_PX = 14, MAX_CHART_PX = 560;
  const KNOWN = new Set(['tool', 'cell', 'sub_call', 'rlm', 'root_call', 'distill', 'event']);
  const KIND_LABEL = {tool: 'tool', cell: 'cell', sub_call: 'sub-call', rlm: 'child RLM', root_call: 'root turn',
    distill: 'distill', event: 'event', running: 'running'};
  const PLURAL = {tool: 'tool calls', cell: 'cells', sub_call: 'sub-calls', rlm: 'child RLMs', root_call: 'root turns',
    distill: 'distillations', event: 'events', running: 'running events'};
  const BAR_COLOR = {tool: '#4f6fbf', cell: '#3f8f4f', sub_call: '#d1a03c', rlm: '#8253b3', root_call: '#a4507f',
    distill: '#5a7f86', event: '#8791a3', running: '#b8bfcc'};
  const PARTIAL = new Set(['iterations', 'time', 'budget', 'timeout', 'interrupted', 'killed', 'crashed']);
  const TEXTS = [['code', 'code'], ['arguments', 'arguments'], ['stdout', 'stdout'], ['stderr', 'stderr'],
    ['result', 'value'], ['system', 'system prompt'], ['prompt', 'prompt'], ['answer', 'answer'],
    ['tool_calls', 'tool calls'], ['error', 'error'], ['texts_dropped', 'texts not kept (the trace was full)']];
  const SEARCHED = ['name', 'label', 'model', 'backend', 'outcome', 'kind', 'unknown_type', 'arguments', 'code',
    'stdout', 'stderr', 'result', 'system', 'prompt', 'answer', 'error', 'tool_calls'];

  const $ = (selector) => document.querySelector(selector);
  const nodes = new Map();  // id -> {id, e: the event or null while it runs, kids: [ids], tot: rolled-up figures}
  const open = new Set(), defaulted = new Set();
  let order = [], roots = [], rows = [], rowAt = new Map(), selected = null, shownKey = '';
  let matches = [], matchSet = new Set(), matchAt = -1, searched = '';
  let problems = DATA.problems.slice(), problemCount = DATA.problem_count, revision = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const kindOf = (n) => n.e ? (KNOWN.has(n.e.type) ? n.e.type : 'event') : 'running';
  function status(e) {
    if (!e) return 'running';
    if (e.error || e.outcome === 'error') return 'error';
    return PARTIAL.has(e.outcome) ? 'partial' : '';
  }
  const int = (value) => Math.round(value || 0).toLocaleString('en-US');
  const money = (cost) => '$' + cost.toFixed(cost >= 1 ? 2 : 4);
  function seconds(value) {
    if (value === undefined || value === null) return '';
    if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 1 : 0) + ' ms';
    if (value < 120) return value.toFixed(2) + ' s';
    return value < 7200 ? (value / 60).toFixed(1) + ' min' : (value / 3600).toFixed(1) + ' h';
  }

  function when(started) {  // the trace's Unix time as a UTC date (events.py keeps it within the year 3000)
    const date = new Date(started * 1000);
    return isNaN(date.getTime()) ? String(started) : date.toISOString().replace('T', ' ').replace('Z', ' UTC');
  }

  // -- the model: nodes, their tree and their rolled-up figures ------------------------------------------
  function ingest(events) {
    for (const e of events) {
      const n = nodes.get(e.id);
      if (n && n.e) { addProblems(['event ' + e.id + ' came again; the first is shown'], 1); continue; }
      if (n) { n.e = e; n.hay = null; } else nodes.set(e.id, {id: e.id, e, kids: [], tot: null, hay: null});
    }
    revision++;
  }

  function addProblems(texts, count) {
    problems = problems.concat(texts.slice(0, Math.max(0, 50 - problems.length)));
    problemCount += count;
  }

  function rebuild() {
    for (const n of [...nodes.values()]) {  // a parent still running (or lost in a crash) is a placeholder
      const parent = n.e ? n.e.parent : undefined;
      if (parent !== undefined && parent !== null && !nodes.has(parent)) {
        nodes.set(parent, {id: parent, e: null, kids: [], tot: null, hay: null});
      }
    }
    order = [...nodes.keys()].sort((a, b) => a - b);
    roots = [];
    for (const id of order) nodes.get(id).kids = [];
    for (const id of order) {
      const n = nodes.get(id), parent = n.e ? n.e.parent : undefined;
      if (parent !== undefined && parent !== null) nodes.get(parent).kids.push(id); else roots.push(id);
    }
    for (let i = order.length - 1; i >= 0; i--) {  // children have larger ids: each is summed before its parent
      const n = nodes.get(order[i]), e = n.e, kind = kindOf(n), state = status(e);
      const start = e && e.started !== undefined ? e.started : Infinity;
      const t = {sub: 0, turns: 0, tin: 0, tout: 0, cost: 0, unknown: false, errors: state === 'error' ? 1 : 0,
        partial: state === 'partial' ? 1 : 0, start, end: isFinite(start) ? start + (e.elapsed_s || 0) : -Infinity};
      if (kind === 'sub_call' || kind === 'root_call') {
        if (kind === 'sub_call') t.sub = 1; else t.turns = 1;
        t.tin = e.input_tokens || 0; t.tout = e.output_tokens || 0; t.cost = e.cost_usd || 0;
        t.unknown = e.cost_usd === undefined && !e.error && !e.cached;
      }
      for (const kid of n.kids) {
        const k = nodes.get(kid).tot;
        t.sub += k.sub; t.turns += k.turns; t.tin += k.tin; t.tout += k.tout; t.cost += k.cost;
        t.unknown = t.unknown || k.unknown; t.errors += k.errors; t.partial += k.partial;
        t.start = Math.min(t.start, k.start); t.end = Math.max(t.end, k.end);
      }
      n.tot = t;
      if (!defaulted.has(n.id) && (e || n.kids.length)) {
        defaulted.add(n.id);
        if (!e || kind === 'tool' || kind === 'rlm' || (kind === 'cell' && n.kids.length <= OPEN_CELL_UP_TO)) {
          open.add(n.id);
        }
      }
    }
  }

  function flatten() {
    rows = [];
    const stack = [];
    for (let i = roots.length - 1; i >= 0; i--) stack.push([roots[i], 0]);
    while (stack.length) {
      const [id, depth] = stack.pop();
      rows.push([id, depth]);
      if (!open.has(id)) continue;
      const kids = nodes.get(id).kids;
      for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
    }
    rowAt = new Map(rows.map((row, index) => [row[0], index]));
  }

  function figures(t) {
    const parts = [];
    if (t.sub) parts.push(int(t.sub) + (t.sub === 1 ? ' sub-call' : ' sub-calls'));
    if (t.turns) parts.push(int(t.turns) + (t.turns === 1 ? ' root turn' : ' root turns'));
    if (t.sub || t.turns) {
      parts.push(int(t.tin) + ' in / ' + int(t.tout) + ' out tokens');
      parts.push(money(t.cost) + (t.unknown ? ' + unknown' : ''));
    }
    return parts;
  }

  // -- the tree: a virtual list of the open nodes' rows -------------------------------------------------
  const list = $('#rows'), spacer = $('#spacer'), win = $('#window'), detail = $('#detail');

  function labelOf(n) {
    if (!n.e) return 'event ' + n.id + ' (not finished: still running, or the session stopped)';
    const e = n.e, name = e.type === 'event' ? e.unknown_type : e.name;
    if (e.type === 'sub_call' && e.label) return e.label;  // the model is in the details; the prompt tells rows apart
    const head = e.type === 'sub_call' || e.type === 'root_call' ? (e.model || e.name || '') : (name || '');
    return e.label ? head + ' \u00b7 ' + e.label : head;
  }

  function rowElement(id, depth) {
    const n = nodes.get(id), e = n.e, t = n.tot, kind = kindOf(n), row = el('div', 'row');
    row.dataset.id = id;
    row.setAttribute('role', 'treeitem');
    row.setAttribute('aria-level', depth + 1);
    row.style.paddingLeft = (Math.min(depth, MAX_INDENT) * 14 + 4) + 'px';
    if (id === selected) { row.classList.add('selected'); row.setAttribute('aria-selected', 'true'); }
    if (matchSet.has(id)) row.classList.add('hit');
    if (n.kids.length) row.setAttribute('aria-expanded', open.has(id));
    row.append(el('span', 'twisty', n.kids.length ? (open.has(id) ? '\u25be' : '\u25b8') : ''),
      el('span', 'kind k-' + kind, KIND_LABEL[kind]));
    const state = status(e), below = t.errors - (state === 'error' ? 1 : 0);  // marks first: a long label hides the end
    if (state === 'error') row.append(el('span', 'mark err', e.outcome && e.outcome !== 'error' ? e.outcome : 'error'));
    else if (state === 'partial') row.append(el('span', 'mark part', e.outcome));
    else if (state === 'running') row.append(el('span', 'mark run', 'running'));
    if (below > 0) row.append(el('span', 'mark err', int(below) + ' failed below'));
    row.append(el('span', 'label', labelOf(n)));
    const meta = [];
    if (e && e.elapsed_s !== undefined) meta.push(seconds(e.elapsed_s));
    if (kind === 'sub_call') {
      meta.push(int(e.input_tokens) + '/' + int(e.output_tokens) + ' tok');
      if (e.cached) meta.push('cached');
    } else if (t.sub) meta.push(int(t.sub) + ' sub-calls');
    if (t.cost > 0) meta.push(money(t.cost) + (t.unknown ? ' + ?' : ''));
    row.append(el('span', 'meta', meta.join(' \u00b7 ')));
    return row;
  }

  function paint() {
    spacer.style.height = rows.length * ROW + 'px';
    const top = list.scrollTop, height = list.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    win.style.transform = 'translateY(' + first * ROW + 'px)';
    const fragment = document.createDocumentFragment();
    for (let i = first; i < last; i++) fragment.append(rowElement(rows[i][0], rows[i][1]));
    win.replaceChildren(fragment);
  }

  function refreshTree() { flatten(); paint(); }

  function toggle(id, state) {
    if (!nodes.get(id).kids.length) return;
    if (state === undefined ? !open.has(id) : state) open.add(id); else open.delete(id);
    refreshTree();
  }

  function reveal(id) {  // open every ancestor (parents have smaller ids, so this ends)
    let n = nodes.get(id), guard = 0;
    while (n && n.e && n.e.parent !== undefined && guard++ < 100000) { open.add(n.e.parent); n = nodes.get(n.e.parent); }
    refreshTree();
    const index = rowAt.get(id);
    if (index !== undefined) {
      const top = index * ROW;
      if (top < list.scrollTop || top > list.scrollTop + list.clientHeight - ROW) {
        list.scrollTop = Math.max(0, top - list.clientHeight / 3);
      }
      paint();
    }
  }

  function select(id, scroll) {
    if (id !== null && !nodes.has(id)) return;
    selected = id;
    if (id === null) history.replaceState(null, '', location.pathname + location.search);
    else history.replaceState(null, '', '#select=' + id);
    if (scroll && id !== null) reveal(id); else paint();
    showDetail();
  }

  // -- the detail pane: fields, texts, figures below, and a timeline of the children --------------------
  function field(list, name, value) {
    if (value === undefined || value === null || value === '') return;
    list.append(el('dt', '', name), el('dd', '', value));
  }

  function jump(id, text) {
    const link = el('a', 'jump', text);
    link.addEventListener('click', () => select(id, true));
    return link;
  }

  function showDetail() {
    const key = selected === null ? 'session:' + revision : selected + ':' + JSON.stringify(nodes.get(selected).tot)
      + (nodes.get(selected).e ? 'e' : '');
    if (key === shownKey) return;
    shownKey = key;
    const scroll = detail.scrollTop;
    detail.replaceChildren();
    if (selected === null) { sessionDetail(); return; }
    const n = nodes.get(selected), e = n.e, kind = kindOf(n), state = status(e);
    detail.append(el('h2', '', KIND_LABEL[kind] + ' \u00b7 ' + labelOf(n)));
    if (state === 'error') detail.append(el('div', 'failed', 'failed' + (e.kind ? ' (' + e.kind + ')' : '')));
    if (state === 'partial') detail.append(el('div', 'partial', 'partial: stopped at ' + e.outcome));
    const facts = el('dl');
    field(facts, 'id', selected);
    if (e && e.parent !== undefined) { facts.append(el('dt', '', 'parent')); facts.append(el('dd')); facts.lastChild.append(jump(e.parent, 'event ' + e.parent)); }
    if (e) {
      if (e.started !== undefined) field(facts, 'started', when(e.started));
      field(facts, 'took', seconds(e.elapsed_s));
      field(facts, 'model', e.model); field(facts, 'backend', e.backend); field(facts, 'outcome', e.outcome);
      if (kind === 'sub_call' || kind === 'root_call') {
        field(facts, 'tokens', int(e.input_tokens) + ' in / ' + int(e.output_tokens) + ' out');
        field(facts, 'cost', e.cost_usd !== undefined ? money(e.cost_usd) : (e.cached ? '$0 (cache hit)' : 'unknown price'));
        if (e.cached) field(facts, 'cache', 'answered from the cache');
        if (e.attempts > 1) field(facts, 'attempts', e.attempts);
      }
      field(facts, 'level', e.level); field(facts, 'iterations', e.iterations);
      if (e.type === 'event') field(facts, 'type', e.unknown_type);
    }
    detail.append(facts);
    const below = figures(n.tot);
    if (n.kids.length && below.length) detail.append(el('div', 'rollup', 'beneath: ' + below.join(' \u00b7 ')));
    if (n.tot.errors > (state === 'error' ? 1 : 0)) {
      detail.append(el('div', 'failed', int(n.tot.errors - (state === 'error' ? 1 : 0)) + ' failed beneath'));
    }
    if (n.kids.length) timeline(barsOf(n), n);
    for (const [name, label] of TEXTS) {
      if (!e || !e[name]) continue;
      if (name === 'code' && kind === 'tool') {
        const cell = n.kids.map((kid) => nodes.get(kid)).find((k) => k.e && k.e.type === 'cell' && k.e.code === e.code);
        if (cell) {
          const line = el('div', 'block-label', 'code: ');
          line.append(jump(cell.id, 'shown in ' + (cell.e.name || 'its cell')));
          detail.append(line);
          continue;
        }
      }
      detail.append(el('div', 'block-label', label), el('pre', '', e[name]));
    }
    detail.scrollTop = scroll;
  }

  function sessionDetail() {
    detail.append(el('h2', '', 'The whole session'));
    detail.append(el('div', 'rollup', $('#totals').textContent));
    if (roots.length) timeline(roots, null);
    detail.append(el('div', 'block-label', 'Select a row (or use the arrow keys) to see its code, prompts, answers '
      + 'and a timeline of what ran beneath it; a link to #select=ID opens one event.'));
  }

  function barsOf(n) {  // a chain of one child each (a tool call and its cell) shows what runs beneath it
    let source = n, guard = 0;
    while (source.kids.length === 1 && nodes.get(source.kids[0]).kids.length && guard++ < 64) source = nodes.get(source.kids[0]);
    return source.kids;
  }

  function heap(less) {  // a binary heap: the lanes of the timeline are given out in O(n log n)
    const items = [];
    return {
      size: () => items.length, peek: () => items[0],
      push(item) {
        items.push(item);
        for (let i = items.length - 1; i > 0;) {
          const up = (i - 1) >> 1;
          if (!less(items[i], items[up])) break;
          [items[i], items[up]] = [items[up], items[i]]; i = up;
        }
      },
      pop() {
        const top = items[0], last = items.pop();
        if (items.length) {
          items[0] = last;
          for (let i = 0; ;) {
            const l = 2 * i + 1, r = l + 1;
            let m = i;
            if (l < items.length && less(items[l], items[m])) m = l;
            if (r < items.length && less(items[r], items[m])) m = r;
            if (m === i) break;
            [items[i], items[m]] = [items[m], items[i]]; i = m;
          }
        }
        return top;
      },
    };
  }

  function lanes(bars) {  // each bar in the lowest lane free when it starts: overlapping bars never share one
    const busy = heap((a, b) => a[0] < b[0]), free = heap((a, b) => a < b);
    let count = 0;
    for (const bar of bars) {
      while (busy.size() && busy.peek()[0] < bar.start) free.push(busy.pop()[1]);  // an instant overlaps itself
      bar.lane = free.size() ? free.pop() : count++;
      busy.push([bar.end, bar.lane]);
    }
    return count;
  }

  function timeline(ids, owner) {
    const bars = [];
    let work = 0;
    for (const id of ids) {
      const n = nodes.get(id), t = n.tot;
      if (!isFinite(t.start)) continue;
      const end = Math.max(t.end, t.start);
      bars.push({id, start: t.start, end, kind: kindOf(n), bad: status(n.e) === 'error'});
      work += end - t.start;
    }
    if (!bars.length) return;
    bars.sort((a, b) => a.start - b.start || a.id - b.id);
    const peak = lanes(bars);
    let t0 = bars[0].start, t1 = -Infinity;  // sorted by start
    for (const bar of bars) t1 = Math.max(t1, bar.end);
    if (owner && isFinite(owner.tot.start)) { t0 = Math.min(t0, owner.tot.start); t1 = Math.max(t1, owner.tot.end); }
    const span = Math.max(t1 - t0, 1e-6);
    const kinds = new Set(bars.map((b) => b.kind));
    const kind = kinds.size === 1 ? bars[0].kind : 'event';
    const noun = bars.length === 1 ? KIND_LABEL[kind] : PLURAL[kind];
    const box = el('div', 'timeline');
    const caption = el('div', 'caption', int(bars.length) + ' ' + noun + ' \u00b7 at most ' + int(peak) + ' at once \u00b7 '
      + seconds(span) + ' from first start to last end \u00b7 ' + seconds(work) + ' of work ('
      + (work / span).toFixed(1) + '\u00d7 the span)');
    caption.id = 'timeline-caption';
    caption.dataset.bars = bars.length; caption.dataset.peak = peak;
    const canvas = document.createElement('canvas');
    canvas.id = 'timeline';
    box.append(caption, canvas, el('div', 'hint', 'click a bar to open it \u00b7 the wheel zooms \u00b7 double-click shows it all'));
    detail.append(box);
    const lane = peak * MAX_LANE_PX <= MAX_CHART_PX ? MAX_LANE_PX : MAX_CHART_PX / peak;
    const axis = 16, height = Math.ceil(peak * lane) + axis, width = Math.max(200, canvas.clientWidth || 600);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
    canvas.style.height = height + 'px';
    const draw = canvas.getContext('2d');
    draw.scale(ratio, ratio);
    const byLane = Array.from({length: peak}, () => []);
    for (const bar of bars) byLane[bar.lane].push(bar);
    const failed = bars.filter((bar) => bar.bad);
    t1 = t0 + span;  // a span of zero (one instant) still gets a width
    let v0 = t0, v1 = t1;  // the part of the span in view: the wheel zooms about the pointer, a double-click resets
    const x = (time) => (time - v0) / (v1 - v0) * (width - 2) + 1;
    function paintBars() {
      draw.clearRect(0, 0, width, height);
      draw.fillStyle = '#6a7385'; draw.font = '10px system-ui,sans-serif';
      for (let i = 0; i <= 4; i++) {
        const at = x(v0 + (v1 - v0) * i / 4);
        draw.fillRect(at, 0, 1, 4);
        draw.textAlign = i === 0 ? 'left' : (i === 4 ? 'right' : 'center');
        draw.fillText(seconds(v0 - t0 + (v1 - v0) * i / 4), at, 13);
      }
      const tall = Math.max(1, lane - (lane > 3 ? 1 : 0));
      for (const bar of bars) {
        if (bar.end < v0 || bar.start > v1 || bar.bad) continue;
        const left = x(bar.start);
        draw.fillStyle = BAR_COLOR[bar.kind] || '#8791a3';
        draw.fillRect(left, axis + bar.lane * lane, Math.max(1, x(bar.end) - left), tall);
      }
      draw.fillStyle = '#c62828';  // failures last and at least 3 px wide, so that none hides among 100k bars
      for (const bar of failed) {
        const left = x(bar.start);
        draw.fillRect(left, axis + bar.lane * lane, Math.max(3, x(bar.end) - left), Math.max(tall, 3));
      }
    }
    paintBars();
    const hit = (event) => {
      const box = canvas.getBoundingClientRect(), px = event.clientX - box.left, py = event.clientY - box.top - axis;
      const row = byLane[Math.floor(py / lane)];
      if (!row) return null;
      const time = v0 + (px - 1) / (width - 2) * (v1 - v0), slack = 3 / width * (v1 - v0);
      let low = 0, high = row.length - 1, found = null;
      while (low <= high) {  // the last bar in the lane that starts before the pointer
        const mid = (low + high) >> 1;
        if (row[mid].start <= time + slack) { found = mid; low = mid + 1; } else high = mid - 1;
      }
      return found !== null && row[found].end >= time - slack ? row[found] : null;
    };
    canvas.addEventListener('mousemove', (event) => {
      const bar = hit(event);
      canvas.title = bar ? labelOf(nodes.get(bar.id)) + ' \u00b7 ' + seconds(bar.end - bar.start) : '';
    });
    canvas.addEventListener('click', (event) => { const bar = hit(event); if (bar) select(bar.id, true); });
    canvas.addEventListener('wheel', (event) => {
      event.preventDefault();
      const box = canvas.getBoundingClientRect(), at = v0 + (event.clientX - box.left) / width * (v1 - v0);
      const factor = event.deltaY < 0 ? 0.8 : 1.25, least = span / 1e6;
      v0 = Math.max(t0, at - (at - v0) * factor); v1 = Math.min(t1, at + (v1 - at) * factor);
      if (v1 - v0 < least) v1 = v0 + least;
      paintBars();
    }, {passive: false});
    canvas.addEventListener('dblclick', () => { v0 = t0; v1 = t1; paintBars(); });  // t1 = t0 + span, above
  }

  // -- the header: totals, problems, search ---------------------------------------------------------------
  function totals() {
    const count = {tool: 0, cell: 0, sub_call: 0, rlm: 0};
    let tin = 0, tout = 0, cost = 0, unknown = false, errors = 0, partial = 0, running = 0, inTools = 0;
    for (const n of nodes.values()) {
      const e = n.e, kind = kindOf(n), state = status(e);
      if (kind in count) count[kind]++;
      if (kind === 'sub_call' || kind === 'root_call') {
        tin += e.input_tokens || 0; tout += e.output_tokens || 0; cost += e.cost_usd || 0;
        unknown = unknown || (e.cost_usd === undefined && !e.error && !e.cached);
      }
      if (state === 'error') errors++; else if (state === 'partial') partial++; else if (state === 'running') running++;
    }
    for (const id of roots) { const e = nodes.get(id).e; if (e && e.type === 'tool') inTools += e.elapsed_s || 0; }
    const parts = [int(count.tool) + ' tool calls', int(count.cell) + ' cells', int(count.sub_call) + ' sub-calls'];
    if (count.rlm) parts.push(int(count.rlm) + ' child RLMs');
    parts.push(int(tin) + ' in / ' + int(tout) + ' out tokens', money(cost) + (unknown ? ' + unknown' : ''),
      int(errors) + ' errors');
    if (partial) parts.push(int(partial) + ' partial');
    if (running) parts.push(int(running) + ' running');
    parts.push(seconds(inTools) + ' in tool calls');
    $('#totals').textContent = parts.join(' \u00b7 ');
  }

  function showProblems() {
    const box = $('#problems');
    if (!problemCount) { box.hidden = true; return; }
    box.hidden = false;
    box.querySelector('summary').textContent = int(problemCount) + ' lines of the trace skipped or changed';
    const items = box.querySelector('ul');
    items.replaceChildren(...problems.slice(0, 50).map((text) => el('li', '', text)));
    if (problemCount > 50) items.append(el('li', '', 'and ' + int(problemCount - 50) + ' more'));
  }

  function haystack(n) {
    if (n.hay === null) {
      const e = n.e || {};
      n.hay = SEARCHED.map((name) => e[name]).filter((value) => typeof value === 'string').join('\n').toLowerCase();
    }
    return n.hay;
  }

  function search(again) {  // `again`: the events changed (following); the matches are found anew, staying put
    const query = $('#q').value.trim().toLowerCase();
    if (query === searched && !again) return;
    searched = query;
    matches = query ? order.filter((id) => haystack(nodes.get(id)).includes(query)) : [];
    matchSet = new Set(matches);
    matchAt = again ? matches.indexOf(selected) : -1;
    const count = int(matches.length) + (matches.length === 1 ? ' match' : ' matches');
    $('#matches').textContent = !query ? '' : (matchAt >= 0 ? int(matchAt + 1) + ' of ' + count : count);
    if (matches.length && !again) step(1); else paint();
  }

  function step(direction) {
    if (!matches.length) return;
    matchAt = (matchAt + direction + matches.length) % matches.length;
    $('#matches').textContent = int(matchAt + 1) + ' of ' + int(matches.length);
    select(matches[matchAt], true);
  }

  function nextError() {
    const start = selected === null ? -Infinity : selected;
    const failed = order.filter((id) => status(nodes.get(id).e) === 'error');
    if (!failed.length) { $('#matches').textContent = 'no errors'; return; }
    select(failed.find((id) => id > start) ?? failed[0], true);
  }

  function refresh() {
    rebuild(); totals(); showProblems(); refreshTree();
    if (searched) search(true);
    showDetail();
  }

  // -- wiring -------------------------------------------------------------------------------------------
  let typing = null;
  $('#q').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => search(false), 200); });
  $('#q').addEventListener('keydown', (event) => {
    if (event.key === 'Enter') { clearTimeout(typing); if ($('#q').value.trim().toLowerCase() !== searched) search(false); else step(event.shiftKey ? -1 : 1); }
  });
  $('#next').addEventListener('click', () => step(1));
  $('#prev').addEventListener('click', () => step(-1));
  $('#next-error').addEventListener('click', nextError);
  $('#expand').addEventListener('click', () => { for (const n of nodes.values()) if (n.kids.length) open.add(n.id); refreshTree(); });
  $('#collapse').addEventListener('click', () => { open.clear(); refreshTree(); });
  $('#overview').addEventListener('click', () => select(null));
  list.addEventListener('scroll', () => requestAnimationFrame(paint));
  window.addEventListener('resize', () => { paint(); shownKey = ''; showDetail(); });
  list.addEventListener('click', (event) => {
    const row = event.target.closest('.row');
    if (!row) return;
    const id = Number(row.dataset.id);
    if (event.target.classList.contains('twisty')) toggle(id); else select(id);
    list.focus();
  });
  list.addEventListener('dblclick', (event) => { const row = event.target.closest('.row'); if (row) toggle(Number(row.dataset.id)); });
  list.addEventListener('keydown', (event) => {
    const index = selected === null ? -1 : (rowAt.get(selected) ?? -1);
    const n = selected === null ? null : nodes.get(selected);
    let target = null;
    if (event.key === 'ArrowDown') target = rows[Math.min(rows.length - 1, index + 1)];
    else if (event.key === 'ArrowUp') target = rows[Math.max(0, index - 1)];
    else if (event.key === 'ArrowRight' && n) { if (n.kids.length && !open.has(n.id)) toggle(n.id, true); else if (n.kids.length) target = [n.kids[0]]; }
    else if (event.key === 'ArrowLeft' && n) { if (open.has(n.id) && n.kids.length) toggle(n.id, false); else if (n.e && n.e.parent !== undefined) target = [n.e.parent]; }
    else if (event.key === 'Enter' && n) toggle(n.id);
    else return;
    event.preventDefault();
    if (target) select(target[0], true);
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === '/' && document.activeElement !== $('#q')) { event.preventDefault(); $('#q').focus(); }
  });

  async function follow() {  // ask the server for the lines appended since the last answer, once a second
    let offset = 0, line = 0, failures = 0;
    for (;;) {
      let more = false;
      try {
        const reply = await fetch('events?offset=' + offset + '&line=' + line, {cache: 'no-store'});
        if (!reply.ok) throw new Error('HTTP ' + reply.status);
        const batch = await reply.json();
        if (batch.reset) {  // the trace was replaced: start again
          nodes.clear(); open.clear(); defaulted.clear(); problems = []; problemCount = 0; selected = null;
          matches = []; matchSet = new Set(); matchAt = -1; searched = '';
        }
        offset = batch.offset; line = batch.line; more = batch.more; failures = 0;
        if (batch.events.length || batch.problem_count || batch.reset) {
          ingest(batch.events);
          addProblems(batch.problems, batch.problem_count);
          refresh();
        }
        $('#status').textContent = 'following ' + batch.trace + ' \u00b7 ' + int(nodes.size) + ' events \u00b7 updated '
          + new Date().toLocaleTimeString();
      } catch (error) {
        failures++;
        $('#status').textContent = 'cannot reach the server that serves this page (' + error.message + '); retrying';
      }
      await new Promise((resolve) => setTimeout(resolve, more ? 0 : Math.min(1000 * (1 + failures), 10000)));
    }
  }

  $('#title').textContent = DATA.title;
  ingest(DATA.events);
  refresh();
  function followHash() {  // #select=ID (or the older #expand=ID) opens one event, also on a link in the page
    const wanted = location.hash.match(/(?:select|expand)=(\d+)/);
    if (wanted && nodes.has(Number(wanted[1]))) select(Number(wanted[1]), true); else showDetail();
  }
  window.addEventListener('hashchange', followHash);
  followHash();
  document.body.dataset.ready = 'yes';
  document.body.dataset.drawnMs = Math.round(performance.now());  // since navigation began: bench_viewer reads it
  if (DATA.follow) follow();
})();
