// The operator page: polls the service's read API and renders with textContent only
// (stored fields never become HTML). No library, no other host.
"use strict";

const BASE = document.querySelector('meta[name="jaffnet-base"]').content;
const SIGNED_IN = document.querySelector('meta[name="jaffnet-auth"]').content === "keys";
const POLL_MS = 2000;
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

async function getJSON(path) {
  const answer = await fetch(BASE + path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (answer.status === 401) window.location.replace(BASE + "/signin"); // the session ended or its key was revoked
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = new Error((body.error && body.error.message) || `HTTP ${answer.status}`);
    error.code = body.error && body.error.code;
    throw error;
  }
  return body;
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
  const where = [item.line, item.station, item.part_id].filter(Boolean).join(" · ") || "(no line)";
  const button = el("button", { class: "card", type: "button", data: { requestId: item.request_id } },
    picture,
    el("div", { class: "caption" }, el("span", {}, where), el("span", {}, localTime(item.time))),
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
    const lineQuery = state.line ? `&line=${encodeURIComponent(state.line)}` : "";
    const [counts, page] = await Promise.all([
      getJSON("/v1/decision-counts?window_s=3600"),
      getJSON(`/v1/decisions?decision=NG&limit=${GALLERY_SIZE}${lineQuery}`),
    ]);
    renderCounts(counts);
    renderGallery(page);
    setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (error) {
    if (error.code === "no_decisions_yet") setStatus("no decision logged yet", false);
    else setStatus(`service unreachable: ${error.message}`, true);
  }
}

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

document.getElementById("line-filter").addEventListener("change", (event) => {
  state.line = event.target.value;
  state.galleryKey = "";
  refresh();
});
document.getElementById("detail-close").addEventListener("click", closeDetail);
const signOut = document.getElementById("sign-out");
signOut.hidden = !SIGNED_IN;
signOut.addEventListener("click", async () => {
  await fetch(BASE + "/v1/session", { method: "DELETE", cache: "no-store" }).catch(() => {});
  window.location.replace(BASE + "/signin");
});
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDetail(); });

refreshModel().catch(() => setStatus("model card unavailable", true));
setInterval(() => refreshModel().catch(() => {}), 30000);
poll();
