// Marking objects: the object list, the brush and eraser, click-to-select, undo.

import { colourCss, decodeRle, labelsFromPng, objectIds, paintDisc } from "./masks.js";
import { $, api, redrawMasks, say, stage, state } from "./state.js";

// ------------------------------------------------------------------ objects

export function setObjects(objects) {
  state.objects = objects;
  state.current = objects.length ? objects[0].id : 1;
  renderObjects();
}

export function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const object of state.objects) {
    const item = document.createElement("li");
    const pick = document.createElement("input");
    Object.assign(pick, { type: "radio", name: "object", value: String(object.id),
      checked: object.id === state.current, id: `object-${object.id}` });
    pick.addEventListener("change", () => { state.current = object.id; });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourCss(object.id);
    const name = document.createElement("input");
    Object.assign(name, { type: "text", value: object.name, className: "name" });
    name.setAttribute("aria-label", `name of object ${object.id}`);
    name.addEventListener("input", () => { object.name = name.value; });
    const shown = document.createElement("input");
    Object.assign(shown, { type: "checkbox", checked: !stage.view.hidden.has(object.id) });
    shown.setAttribute("aria-label", `show object ${object.id}`);
    shown.addEventListener("change", () => {
      if (shown.checked) stage.view.hidden.delete(object.id);
      else stage.view.hidden.add(object.id);
      redrawMasks();
    });
    const label = document.createElement("label");
    label.htmlFor = pick.id;
    label.append(swatch, ` ${object.id}`);
    item.append(pick, label, name, shown);
    list.append(item);
  }
}

export function addObject() {
  const id = Math.max(0, ...state.objects.map((o) => o.id)) + 1;
  if (id > 255) return;
  state.objects.push({ id, name: `object ${id}` });
  state.current = id;
  renderObjects();
}

// ------------------------------------------------------------------ editing

// The label map being edited on the current frame (created on first use) and, for a job,
// the objects touched on it.
function editable() {
  const n = state.frame;
  const size = state.source.width * state.source.height;
  if (!state.job) {
    if (!state.annotations.has(n)) state.annotations.set(n, new Uint8Array(size));
    return { labels: state.annotations.get(n), touched: null };
  }
  if (!state.corrections.has(n)) {
    const base = state.results.get(n);
    state.corrections.set(n, { labels: base ? base.slice() : new Uint8Array(size), touched: new Set() });
  }
  return state.corrections.get(n);
}

export function remember() {
  const target = editable();
  state.undo.push({ frame: state.frame, job: Boolean(state.job), labels: target.labels.slice(),
    touched: target.touched ? new Set(target.touched) : null });
  if (state.undo.length > 40) state.undo.shift();
}

export function undo() {
  const last = state.undo.pop();
  if (!last) return null;
  if (last.job) state.corrections.set(last.frame, { labels: last.labels, touched: last.touched });
  else state.annotations.set(last.frame, last.labels);
  if (last.frame === state.frame) redrawMasks();
  return last.frame; // the caller shows it when it is another frame
}

export function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

export function paintAt(point) {
  const target = editable();
  const radius = Number($("brush-size").value) / 2;
  paintDisc(target.labels, stage.width, stage.height, point.x, point.y, radius, state.current, tool() === "eraser");
  if (target.touched) target.touched.add(state.current);
  redrawMasks();
}

export async function selectAt(point) {
  const source = state.source;
  const fields = { frame: state.frame, x: point.x, y: point.y };
  fields[source.kind === "job" ? "job_id" : "upload_id"] = source.id;
  const answer = await api.form("/v1/proposals", fields);
  const chosen = answer.proposals.find((p) => p.id === answer.selected);
  if (!chosen) {
    say(new Error("no proposal covers that point: paint the object with the brush instead"));
    return;
  }
  remember();
  const target = editable();
  const mask = decodeRle(chosen.rle);
  for (let i = 0; i < mask.length; i++) {
    if (target.labels[i] === state.current) target.labels[i] = 0;
    if (mask[i]) target.labels[i] = state.current;
  }
  if (target.touched) target.touched.add(state.current);
  redrawMasks();
}

export async function loadMaskFile(file) {
  const labels = await labelsFromPng(file, stage.width, stage.height);
  remember();
  const target = editable();
  target.labels.set(labels);
  for (const id of objectIds(labels)) {
    if (!state.objects.some((o) => o.id === id)) state.objects.push({ id, name: `object ${id}` });
    if (target.touched) target.touched.add(id);
  }
  renderObjects();
  redrawMasks();
}

