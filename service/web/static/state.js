// The page's shared state, its clients and its messages.

import { Api, ApiError } from "./api.js";
import { Lru, Stage } from "./stage.js";

export const $ = (id) => document.getElementById(id);
export const api = new Api();
export const stage = new Stage($("frame-canvas"), $("mask-canvas"));

export const state = {
  info: null,
  source: null, // {kind: "upload" | "job", id, width, height, frames, fps}
  job: null,
  frame: 0,
  annotations: new Map(), // before a job: frame -> labels
  corrections: new Map(), // a job's frame -> {labels, touched: Set of ids}
  results: new Lru(512), // a job's frame -> labels
  images: new Lru(128), // frame -> ImageBitmap
  objects: [], // {id, name}
  current: 1,
  undo: [],
  playing: false,
  following: null, // AbortController of the events stream
  loadToken: 0,
};

// ------------------------------------------------------------------ messages

export function say(error) {
  const box = $("message");
  if (!error) {
    box.hidden = true;
    return;
  }
  box.textContent = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error.message || error);
  box.hidden = false;
  if (error instanceof ApiError && error.status === 401) $("key-form").hidden = false;
}

export async function guarded(action) {
  try {
    say(null);
    return await action();
  } catch (error) {
    if (error.name !== "AbortError") say(error);
    return undefined;
  }
}

// ------------------------------------------------------------------ masks on the stage

export function shownLabels(n) {
  if (!state.job) return state.annotations.get(n) || null;
  const correction = state.corrections.get(n);
  return correction ? correction.labels : state.results.get(n) || null;
}

export function redrawMasks() {
  stage.drawMasks(shownLabels(state.frame));
}

