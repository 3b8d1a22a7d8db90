// The operator page: polls the service's read API and renders with textContent only
// (stored fields never become HTML). No library, no other host. Two views: the monitor (counts,
// latest NG, line quality) and the review queue (#queue), which posts operators' verdicts.
"use strict";

const BASE = document.querySelector('meta[name="jaffnet-base"]').content;
const SIGNED_IN = document.querySelector('meta[name="jaffnet-auth"]').content === "keys";
const POLL_MS = 2000;
const QUALITY_POLL_MS = 15000; // it reads every review in range: slower than the counts
const QUEUE_POLL_MS = 5000;
const QUEUE_SIZE = 100;
const GALLERY_SIZE = 12;
const THUMB_SIDE = 480;

const state = { line: "", galleryKey: "", openId: null, lines: new Set() };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

async function request(path, options) {
  const answer = await fetch(BASE + path, { cache: "no-store", ...options,
    headers: { Accept: "application/json", ...(options && options.headers) } });
  if (answer.status === 401) window.location.replace(BASE + "/signin"); // the session ended or its key was revoked
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = new Error((body.error && body.error.message) || `HTTP ${answer.status}`);
    error.code = body.error && body.error.code;
    error.status = answer.status;
    throw error;
  }
  return body;
}

function getJSON(path) {
  return request(path);
}

function postJSON(path, body) {
  // JSON only: the review API refuses anything else, so no cross-site form can post it (see serving.access)
  return request(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function lineQuery(separator) {
  return state.line ? `${separator}line=${encodeURIComponent(state.line)}` : "";
}

function place(item) {
  return [item.line, item.station, item.part_id].filter(Boolean).join(" · ") || "(no line)";
}

function localTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function refreshModel() {
  const card = await getJSON("/v1/model");
  document.getElementById("model").textContent = `model ${card.name} v${card.version} · ${card.backend} on ${card.device}`;
}

function renderCounts(counts) {
  const body = document.querySelector("#counts tbody");
  body.replaceChildren();
  for (const row of counts.lines) {
    const total = row.ok + row.ng;
    const share = total ? ((100 * row.ng) / total).toFixed(1) : "0.0";
    body.append(el("tr", { data: { line: row.line ?? "" } },
      el("td", {}, row.line ?? "(no line)"), el("td", { class: "ok" }, row.ok),
      el("td", { class: "ng" }, row.ng), el("td", {}, share)));
    if (row.line) state.lines.add(row.line);
  }
  const select = document.getElementById("line-filter");
  const known = new Set([...select.options].map((option) => option.value));
  for (const line of [...state.lines].sort()) {
    if (!known.has(line)) select.append(el("option", { value: line }, line));
  }
}

function card(item) {
  const picture = item.links.overlay_png
    ? el("img", { src: `${item.links.overlay_png}?max_side=${THUMB_SIDE}`, alt: `overlay of ${item.request_id}` })
    : el("div", { class: "noframe" }, "frame not kept");
  const button = el("button", { class: "card", type: "button", data: { requestId: item.request_id } },
    picture,
    el("div", { class: "caption" }, el("span", {}, place(item)), el("span", {}, localTime(item.time))),
    el("div", { class: "caption" }, el("span", { class: "ng" }, "NG"),
      el("span", {}, `score ${item.image_score.toFixed(3)}`)));
  button.addEventListener("click", () => openDetail(item.request_id).catch((error) => setStatus(error.message, true)));
  return button;
}

function renderGallery(page) {
  const key = page.items.map((item) => item.request_id).join(",");
  if (key === state.galleryKey) return; // unchanged: no flicker
  state.galleryKey = key;
  document.getElementById("gallery").replaceChildren(...page.items.map(card));
  document.getElementById("gallery-empty").hidden = page.items.length > 0;
}

function fact(list, name, value) {
  list.append(el("dt", {}, name), el("dd", {}, value));
}

async function openDetail(requestId) {
  state.openId = requestId;
  const detail = await getJSON(`/v1/decisions/${encodeURIComponent(requestId)}`);
  if (state.openId !== requestId) return;
  const badge = document.getElementById("detail-decision");
  badge.textContent = detail.decision;
  badge.className = `badge ${detail.decision.toLowerCase()}`;
  document.getElementById("detail-reason").textContent = detail.reason;
  const image = document.getElementById("detail-image");
  image.hidden = !detail.links.overlay_png;
  if (detail.links.overlay_png) image.src = detail.links.overlay_png;
  const facts = document.getElementById("detail-facts");
  facts.replaceChildren();
  fact(facts, "request id", detail.request_id);
  fact(facts, "time", new Date(detail.time).toLocaleString());
  fact(facts, "line / station", `${detail.line ?? "–"} / ${detail.station ?? "–"}`);
  fact(facts, "part id", detail.part_id ?? "–");
  fact(facts, "model", `${detail.model.name} v${detail.model.version}`);
  fact(facts, "image score", `${detail.image_score.toFixed(4)} (threshold ${detail.image_threshold.toFixed(4)})`);
  fact(facts, "max pixel p", detail.defect_score.toFixed(4));
  fact(facts, "defect area", `${detail.defect_area_px} px, largest region ${detail.largest_region_px} px`);
  fact(facts, "frame", `${detail.image.width}×${detail.image.height} ${detail.image.format}`);
  const regions = document.querySelector("#detail-regions tbody");
  regions.replaceChildren(...detail.regions.map((region, index) => el("tr", {},
    el("td", {}, index + 1), el("td", {}, region.bbox.x), el("td", {}, region.bbox.y),
    el("td", {}, region.bbox.width), el("td", {}, region.bbox.height), el("td", {}, region.area_px),
    el("td", {}, region.max_probability.toFixed(3)))));
  document.getElementById("detail").hidden = false;
}

function closeDetail() {
  state.openId = null;
  document.getElementById("detail").hidden = true;
}

async function refresh() {
  try {
    const [counts, page] = await Promise.all([
      getJSON("/v1/decision-counts?window_s=3600"),
      getJSON(`/v1/decisions?decision=NG&limit=${GALLERY_SIZE}${lineQuery("&")}`),
    ]);
    renderCounts(counts);
    renderGallery(page);
    setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (error) {
    if (error.code === "no_decisions_yet") setStatus("no decision logged yet", false);
    else setStatus(`service unreachable: ${error.message}`, true);
  }
}

// -- line quality --------------------------------------------------------------------------------

function percent(share) {
  return `${(100 * share).toFixed(share < 0.01 ? 2 : 1)} %`;
}

function estimate(figure) {
  // the rate can be unknown while its bound is not (e.g. no good part among the reviewed frames)
  const bound = figure.upper_95 === null ? "" : ` (≤ ${percent(figure.upper_95)})`;
  return `${figure.rate === null ? "–" : percent(figure.rate)}${bound}`;
}

function renderQuality(quality) {
  const rows = [];
  for (const line of quality.lines) {
    rows.push(el("tr", { data: { line: line.line ?? "" } },
      el("td", {}, line.line ?? "(no line)"), el("td", {}, line.reviewed),
      el("td", {}, `${line.reviewed_ok} / ${line.reviewed_ng}`), el("td", {}, line.disagreements),
      el("td", {}, line.reported_escapes), el("td", { class: "rate" }, estimate(line.escape)),
      el("td", { class: "rate" }, estimate(line.overkill))));
    const notes = [...new Set([line.escape.note, line.overkill.note].filter(Boolean))];
    if (notes.length) {
      rows.push(el("tr", { class: "quality-note", data: { line: line.line ?? "" } },
        el("td", { colspan: "7" }, notes.join(" · "))));
    }
  }
  document.querySelector("#quality tbody").replaceChildren(...rows);
  document.getElementById("quality-empty").hidden = quality.lines.length > 0;
}

async function refreshQuality() {
  try {
    renderQuality(await getJSON(`/v1/line-quality${lineQuery("?")}`));
  } catch (error) {
    if (error.code !== "no_decisions_yet") setStatus(`line quality unavailable: ${error.message}`, true);
  }
}

// -- the review queue ------------------------------------------------------------------------------
// Newest first, as the read API pages: the part is most likely still at the station to be checked by
// hand, and retention drops the oldest frames first, so work from the old end would go to frames about
// to vanish. The order never depends on a frame's content, which the line-quality estimate assumes.

const queue = {
  items: [], // unreviewed decisions that kept their frame, newest first
  more: false, // the search stopped before the end of the log
  currentId: null,
  finished: new Set(), // reviewed (or gone) here: a poll that raced the review must not bring them back
  boxes: [], // the operator's boxes on the current frame, in frame pixels
  drawing: null, // the box being dragged: {x0, y0, x1, y1} in frame pixels
  boxMode: false,
  showMask: true,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function queueVisible() {
  return !$("queue-view").hidden;
}

async function fetchQueue() {
  // a verdict must rest on the frame the model judged: only decisions that kept one are reviewable
  const answer = await getJSON(`/v1/decisions?reviewed=false&has_frame=true&limit=${QUEUE_SIZE}${lineQuery("&")}`);
  const items = answer.items.filter((item) => !queue.finished.has(item.request_id));
  return { items, more: Boolean(answer.next_cursor) };
}

function currentItem() {
  return queue.items.find((item) => item.request_id === queue.currentId) ?? null;
}

function setQueue(items, more, fallbackIndex) {
  queue.items = items;
  queue.more = more;
  if (!currentItem()) {
    const next = items[Math.min(fallbackIndex, items.length - 1)];
    selectItem(next ? next.request_id : null);
  } else {
    renderPosition();
  }
}

async function refreshQueue() {
  try {
    const index = Math.max(0, queue.items.findIndex((item) => item.request_id === queue.currentId));
    const { items, more } = await fetchQueue();
    if (!queue.busy) setQueue(items, more, index);
  } catch (error) {
    if (error.code === "no_decisions_yet") setQueue([], false, 0);
    else showAlert(`queue unavailable: ${error.message}`);
  }
}

function renderPosition() {
  const count = `${queue.items.length}${queue.more ? "+" : ""}`;
  $("queue-count").textContent = count;
  const index = queue.items.findIndex((item) => item.request_id === queue.currentId);
  $("queue-position").textContent = index < 0 ? "" : `${index + 1} of ${count} waiting · newest first`;
}

function keptReason(kept) {
  if (!kept) return "–";
  if (kept.reason === "sample") return `random OK sample (${percent(kept.sample_rate)})`;
  return { ng: "every NG frame", all: "every frame", near_threshold: "OK near the threshold" }[kept.reason] ?? kept.reason;
}

function selectItem(requestId) {
  queue.currentId = requestId;
  queue.boxes = [];
  queue.drawing = null;
  queue.boxMode = false;
  $("queue-note").value = "";
  const item = currentItem();
  $("queue-stage").hidden = !item;
  $("queue-empty").hidden = Boolean(item);
  renderPosition();
  const badge = $("queue-decision");
  const facts = $("queue-facts");
  facts.replaceChildren();
  $("queue-request").textContent = item ? `request ${item.request_id}` : "";
  if (!item) {
    badge.textContent = "";
    badge.className = "badge";
    $("queue-image").removeAttribute("src");
    renderBoxes();
    return;
  }
  badge.textContent = item.decision;
  badge.className = `badge ${item.decision.toLowerCase()}`;
  const other = item.decision === "OK" ? "NG" : "OK";
  $("confirm-label").textContent = `confirm ${item.decision}`;
  $("flip-label").textContent = `flip to ${other}`;
  fact(facts, "line · station · part", place(item));
  fact(facts, "time", new Date(item.time).toLocaleString());
  fact(facts, "image score", `${item.image_score.toFixed(3)} (threshold ${item.image_threshold.toFixed(3)})`);
  fact(facts, "model regions", item.region_count);
  fact(facts, "kept as", keptReason(item.kept));
  showImage();
}

function showImage() {
  const item = currentItem();
  if (item) $("queue-image").src = queue.showMask ? item.links.overlay_png : item.links.frame_png;
  renderBoxes();
}

function move(step) {
  const index = queue.items.findIndex((item) => item.request_id === queue.currentId);
  const next = queue.items[index + step];
  if (next) {
    clearMessages();
    selectItem(next.request_id);
  }
}

// Where the frame lies in the image element (object-fit: contain) and the canvas that covers it.
function frameGeometry() {
  const image = $("queue-image");
  const width = image.naturalWidth;
  const height = image.naturalHeight;
  if (!image.complete || !width) return null;
  const rect = image.getBoundingClientRect();
  const scale = Math.min(rect.width / width, rect.height / height);
  return { width, height, scale, rect,
           left: (rect.width - width * scale) / 2, top: (rect.height - height * scale) / 2 };
}

function toFrame(event, geometry) {
  const clamp = (value, high) => Math.min(Math.max(value, 0), high);
  return { x: clamp((event.clientX - geometry.rect.left - geometry.left) / geometry.scale, geometry.width),
           y: clamp((event.clientY - geometry.rect.top - geometry.top) / geometry.scale, geometry.height) };
}

function boxOf(drawing) {
  // the dragged corners snap to the nearest pixel edges (at least one pixel wide and high)
  const x = Math.round(Math.min(drawing.x0, drawing.x1));
  const y = Math.round(Math.min(drawing.y0, drawing.y1));
  return { x, y, width: Math.max(1, Math.round(Math.max(drawing.x0, drawing.x1)) - x),
           height: Math.max(1, Math.round(Math.max(drawing.y0, drawing.y1)) - y) };
}

function renderBoxes() {
  const canvas = $("queue-boxes");
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(canvas.clientWidth * ratio);
  canvas.height = Math.round(canvas.clientHeight * ratio);
  canvas.classList.toggle("drawing", queue.boxMode);
  const context = canvas.getContext("2d");
  const geometry = frameGeometry();
  const boxes = queue.drawing ? [...queue.boxes, boxOf(queue.drawing)] : queue.boxes;
  if (geometry) {
    context.scale(ratio, ratio);
    context.lineWidth = 3;
    context.strokeStyle = "#ffd24d";
    for (const box of boxes) {
      context.strokeRect(geometry.left + box.x * geometry.scale, geometry.top + box.y * geometry.scale,
                         box.width * geometry.scale, box.height * geometry.scale);
    }
  }
  const count = queue.boxes.length;
  const boxState = $("queue-box-state");
  boxState.textContent = queue.boxMode ? "drag on the frame to draw a box (Esc cancels)"
    : count ? `${count} box${count > 1 ? "es" : ""} marked: the verdict sent with ${count > 1 ? "them" : "it"} is NG`
      : "";
  boxState.hidden = !boxState.textContent;
}

function startBox() {
  if (!currentItem()) return;
  queue.boxMode = true;
  renderBoxes();
}

function cancelBox() {
  queue.drawing = null;
  queue.boxMode = false;
  renderBoxes();
}

function clearMessages() {
  $("queue-alert").hidden = true;
  $("queue-done").hidden = true;
}

function showAlert(text) {
  const alert = $("queue-alert");
  alert.textContent = text;
  alert.hidden = false;
}

function explain(error) {
  const because = `${error.status ? `HTTP ${error.status}` : "not sent"}: ${error.message}`;
  if (error.status === 403) return `${because}. Only an operator or admin key may review: sign in with one.`;
  if (error.status === 404) return `${because}. Skipped: it is no longer in the log (retention).`;
  if (error.status === 409) return `${because}. Skipped.`;
  return `not saved (${because})`;
}

async function review(flip) {
  const item = currentItem();
  if (!item || queue.busy) return;
  const verdict = flip ? (item.decision === "OK" ? "NG" : "OK") : item.decision;
  if (verdict === "OK" && queue.boxes.length) {
    showAlert("A box marks a defect, so an OK verdict takes none: press F to make it NG, or U to remove the box.");
    return;
  }
  clearMessages();
  queue.busy = true;
  const index = queue.items.indexOf(item);
  try {
    const note = $("queue-note").value.trim();
    await postJSON(`/v1/decisions/${encodeURIComponent(item.request_id)}/review`,
                   { verdict, regions: queue.boxes, note: note || null });
    const done = $("queue-done");
    done.textContent = `✓ ${verdict === item.decision ? "confirmed" : "flipped to"} ${verdict}: ${place(item)}`;
    done.hidden = false;
    finish(item, index);
  } catch (error) {
    showAlert(explain(error));
    if (error.status === 404 || error.status === 409) finish(item, index); // it cannot be reviewed: move on
  } finally {
    queue.busy = false;
  }
}

function finish(item, index) {
  queue.finished.add(item.request_id);
  // the next older frame takes its place
  setQueue(queue.items.filter((other) => other !== item), queue.more, index);
}

function startDrag(event) {
  const geometry = queue.boxMode && frameGeometry();
  if (!geometry) return;
  event.preventDefault();
  event.target.setPointerCapture(event.pointerId);
  const { x, y } = toFrame(event, geometry);
  queue.drawing = { x0: x, y0: y, x1: x, y1: y };
}

function drag(event) {
  const geometry = queue.drawing && frameGeometry();
  if (!geometry) return;
  const { x, y } = toFrame(event, geometry);
  Object.assign(queue.drawing, { x1: x, y1: y });
  renderBoxes();
}

function endDrag(event) {
  if (!queue.drawing) return;
  drag(event);
  const box = boxOf(queue.drawing);
  queue.drawing = null;
  queue.boxMode = false;
  const geometry = frameGeometry();
  if (geometry && box.x < geometry.width && box.y < geometry.height) {
    box.width = Math.min(box.width, geometry.width - box.x);
    box.height = Math.min(box.height, geometry.height - box.y);
    queue.boxes.push(box);
  }
  renderBoxes();
}

const ACTIONS = {
  confirm: () => review(false),
  flip: () => review(true),
  box: startBox,
  undo: () => { queue.boxes.pop(); renderBoxes(); },
  cancel: cancelBox,
  mask: () => { queue.showMask = !queue.showMask; showImage(); },
  next: () => move(1),
  previous: () => move(-1),
  note: () => $("queue-note").focus(),
};
const KEYS = { c: "confirm", enter: "confirm", f: "flip", b: "box", u: "undo", backspace: "undo", escape: "cancel",
               m: "mask", n: "next", j: "next", k: "previous", p: "previous", t: "note" };

function onQueueKey(event) {
  if (event.target === $("queue-note")) {
    if (event.key === "Escape" || event.key === "Enter") $("queue-note").blur(); // back to the keys
    return;
  }
  if (event.target instanceof HTMLSelectElement || event.ctrlKey || event.altKey || event.metaKey) return;
  const action = KEYS[event.key.toLowerCase()];
  if (!action) return;
  event.preventDefault(); // Enter on a focused button must not also click it
  if (event.repeat && (action === "confirm" || action === "flip")) return; // a held key posts once
  ACTIONS[action]();
}

// -- views and start -------------------------------------------------------------------------------

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

async function pollQueue() {
  if (queueVisible()) await refreshQueue();
  setTimeout(pollQueue, QUEUE_POLL_MS);
}

function showView() {
  const inQueue = window.location.hash === "#queue";
  document.body.classList.toggle("fill", inQueue); // the queue fits the screen: no scrolling while reviewing
  $("monitor-view").hidden = inQueue;
  $("queue-view").hidden = !inQueue;
  $("show-monitor").setAttribute("aria-pressed", String(!inQueue));
  $("show-queue").setAttribute("aria-pressed", String(inQueue));
  if (document.activeElement instanceof HTMLElement) document.activeElement.blur(); // keys go to the view
  if (inQueue) refreshQueue();
  else {
    $("queue-count").textContent = ""; // only counted while the queue is open: no stale figure
    refreshQuality();
  }
}

$("line-filter").addEventListener("change", (event) => {
  state.line = event.target.value;
  state.galleryKey = "";
  refresh();
  refreshQuality();
  if (queueVisible()) refreshQueue();
});
$("detail-close").addEventListener("click", closeDetail);
const signOut = $("sign-out");
signOut.hidden = !SIGNED_IN;
signOut.addEventListener("click", async () => {
  await fetch(BASE + "/v1/session", { method: "DELETE", cache: "no-store" }).catch(() => {});
  window.location.replace(BASE + "/signin");
});
$("show-monitor").addEventListener("click", () => { window.location.hash = ""; });
$("show-queue").addEventListener("click", () => { window.location.hash = "queue"; });
window.addEventListener("hashchange", showView);
for (const button of $("queue-keys").querySelectorAll("button[data-action]")) {
  button.addEventListener("click", () => ACTIONS[button.dataset.action]());
}
const canvas = $("queue-boxes");
canvas.addEventListener("pointerdown", startDrag);
canvas.addEventListener("pointermove", drag);
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", cancelBox);
$("queue-image").addEventListener("load", renderBoxes);
window.addEventListener("resize", renderBoxes);
document.addEventListener("keydown", (event) => {
  if (!$("detail").hidden) {
    if (event.key === "Escape") closeDetail();
  } else if (queueVisible()) {
    onQueueKey(event);
  }
});

refreshModel().catch(() => setStatus("model card unavailable", true));
setInterval(() => refreshModel().catch(() => {}), 30000);
setInterval(() => { if (!queueVisible()) refreshQuality(); }, QUALITY_POLL_MS);
showView();
poll();
pollQueue();
