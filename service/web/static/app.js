// The ISVOS page: upload a video, mark objects, track them, review, correct, re-propagate.
// It uses the public /v1 API only (api.js), on this page's origin.

import {
  addObject, loadMaskFile, paintAt, remember, renderObjects, selectAt, setObjects, tool, undo,
} from "./editing.js";
import { ApiError } from "./api.js";
import { encodeRle, labelsFromPng, objectIds, pngOfLabels } from "./masks.js";
import { $, api, guarded, redrawMasks, say, shownLabels, stage, state } from "./state.js";

const OUTPUTS = ["png_zip", "rle_json", "overlay_mp4"];
const FILE_NAMES = { png_zip: "masks.zip", rle_json: "masks.json", overlay_mp4: "overlay.mp4" };

// ------------------------------------------------------------------ sources and frames

function framePath(n) {
  const s = state.source;
  return s.kind === "job" ? `/v1/jobs/${s.id}/video/${n}.jpg` : `/v1/uploads/${s.id}/frames/${n}.jpg`;
}

async function frameImage(n) {
  let bitmap = state.images.get(n);
  if (!bitmap) {
    bitmap = await createImageBitmap(await api.blob(framePath(n)));
    state.images.set(n, bitmap);
  }
  return bitmap;
}

async function jobLabels(n) {
  const job = state.job;
  if (!job) return null;
  let labels = state.results.get(n);
  if (labels) return labels;
  try {
    const blob = await api.blob(`/v1/jobs/${job.id}/frames/${n}.png?r=${job.revision}`, { cache: "no-store" });
    labels = await labelsFromPng(blob, state.source.width, state.source.height);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null; // not written yet
    throw error;
  }
  state.results.set(n, labels);
  return labels;
}

async function goTo(n) {
  const s = state.source;
  if (!s) return;
  n = Math.max(0, Math.min(n, (s.frames || 1) - 1));
  state.frame = n;
  $("frame-slider").value = String(n);
  $("frame-label").textContent = `${n} / ${(s.frames || 1) - 1}`;
  const token = ++state.loadToken;
  const [bitmap] = await Promise.all([frameImage(n), state.job ? jobLabels(n) : null]);
  if (token !== state.loadToken) return; // a later frame was asked for meanwhile
  stage.draw(bitmap, shownLabels(n));
  updateMode();
}

async function openUpload(id) {
  const video = await api.json(`/v1/uploads/${id}/video`);
  state.job = null;
  state.annotations.clear();
  setSource({ kind: "upload", id, ...video });
  setObjects([{ id: 1, name: "object 1" }]);
  await goTo(0);
}

async function openJob(id) {
  stopFollowing();
  const job = await api.json(`/v1/jobs/${id}`);
  state.job = job;
  state.corrections.clear();
  state.results.clear();
  setSource({ kind: "job", id, width: job.video.width, height: job.video.height,
    frames: job.video.frames, fps: job.video.fps });
  setObjects((job.objects || [1]).map((o) => ({ id: o, name: `object ${o}` })));
  showJob(job);
  await goTo(job.options.start || 0);
  if (!isTerminal(job.status)) follow(job.id);
}

function setSource(source) {
  state.source = source;
  state.images.clear();
  state.undo = [];
  stage.resize(source.width, source.height);
  $("frame-slider").max = String(Math.max(0, (source.frames || 1) - 1));
  $("workspace").hidden = false;
  $("start").classList.add("compact");
}

function undoAndShow() {
  const frame = undo();
  if (frame !== null && frame !== state.frame) guarded(() => goTo(frame));
}

// ------------------------------------------------------------------ jobs

function isTerminal(status) {
  return ["succeeded", "failed", "cancelled"].includes(status);
}

async function run() {
  const s = state.source;
  if (s.kind !== "upload") throw new Error("this video already has a job: correct a frame and re-propagate");
  const entries = [];
  for (const [frame, labels] of [...state.annotations.entries()].sort((a, b) => a[0] - b[0])) {
    for (const id of objectIds(labels)) {
      entries.push({ id, frame, segmentation: encodeRle(labels, s.width, s.height, id) });
    }
  }
  if (!entries.length) throw new Error("mark at least one object first (click it, or paint it)");
  const options = { config: $("config").value, start: Math.min(...entries.map((e) => e.frame)),
    outputs: OUTPUTS };
  if ($("size").value) options.size = Number($("size").value);
  const masks = new File([JSON.stringify(entries)], "masks.json", { type: "application/json" });
  const job = await api.form("/v1/jobs", { upload_id: s.id, masks, options: JSON.stringify(options) });
  await openJob(job.id);
  refreshJobs();
}

async function repropagate() {
  const job = state.job;
  const n = state.frame;
  const correction = state.corrections.get(n);
  if (!correction || !correction.touched.size) throw new Error("paint or select on this frame first");
  const present = new Set(objectIds(correction.labels));
  const kept = new Set([...correction.touched].filter((id) => present.has(id)));
  const removed = [...correction.touched].filter((id) => !present.has(id));
  const fields = { frame: n, remove: JSON.stringify(removed) };
  if (kept.size) fields.masks = new File([await pngOfLabels(correction.labels, stage.width, stage.height, kept)], "correction.png", { type: "image/png" });
  const revised = await api.form(`/v1/jobs/${job.id}/revisions`, fields);
  state.job = revised;
  state.corrections.delete(n);
  state.results.deleteFrom(n);
  showJob(revised);
  follow(job.id);
}

function stopFollowing() {
  if (state.following) state.following.abort();
  state.following = null;
}

function follow(jobId) {
  stopFollowing();
  const controller = new AbortController();
  state.following = controller;
  api.follow(jobId, (event) => {
    const data = event.json || {};
    if (event.event === "progress") {
      const frame = Number(data.frame);
      state.results.delete(frame); // written again by a revision
      Object.assign(state.job, { frames_done: Number(data.frames_done), fps: Number(data.fps),
        status: "running" });
      showJob(state.job);
      if ($("follow").checked && !state.playing) goTo(frame);
    } else if (event.event === "status") {
      state.job.status = data.status;
      showJob(state.job);
      if (isTerminal(data.status)) {
        guarded(async () => {
          state.job = await api.json(`/v1/jobs/${jobId}`);
          showJob(state.job);
          refreshJobs();
        });
        return false;
      }
    }
    return true;
  }, controller.signal);
}

function showJob(job) {
  const total = job.frames_total || job.video.frames || 0;
  $("job-progress").max = Math.max(1, total);
  $("job-progress").value = job.frames_done || 0;
  let text = `${job.status}: ${job.frames_done || 0} / ${total} frames`;
  if (job.status === "running" && job.fps) {
    const eta = Math.max(0, (total - job.frames_done) / job.fps);
    text += `, ${job.fps.toFixed(1)} fps, about ${Math.ceil(eta)} s left`;
  }
  if (job.error) text += ` (${job.error.code}: ${job.error.message})`;
  $("job-text").textContent = text;
  const done = job.status === "succeeded";
  $("review-box").disabled = false;
  $("repropagate").disabled = !done;
  for (const button of document.querySelectorAll(".downloads button")) {
    button.disabled = !(job.outputs || []).includes(button.dataset.format);
  }
  $("run").disabled = true;
  const revisions = job.revisions || [];
  $("revision-text").textContent = revisions.length
    ? `revision ${job.revision}: from frame ${revisions[revisions.length - 1].frame}` : "";
  updateMode();
}

function updateMode() {
  const text = !state.job
    ? `Frame ${state.frame}: mark the objects (click one, or paint it), then Run.`
    : state.job.status === "succeeded"
      ? "Review: scrub or play; to correct a frame, paint on it and press Re-propagate."
      : `The job is ${state.job.status}; frames appear as they are written.`;
  $("mode-text").textContent = text;
}

async function download(format) {
  const job = state.job;
  const blob = await api.blob(`/v1/jobs/${job.id}/result?format=${format}`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${job.id}-${FILE_NAMES[format]}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function refreshJobs() {
  const { jobs } = await api.json("/v1/jobs?limit=50");
  const list = $("job-list");
  list.replaceChildren();
  for (const job of jobs) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${job.id.slice(0, 8)} · ${job.status} · ${job.frames_done}/${job.frames_total ?? "?"}`;
    button.addEventListener("click", () => guarded(() => openJob(job.id)));
    item.append(button);
    list.append(item);
  }
}

// ------------------------------------------------------------------ upload

async function takeVideo(file) {
  $("upload-row").hidden = false;
  const id = await api.upload(file, (done, total) => {
    $("upload-progress").max = Math.max(1, total);
    $("upload-progress").value = done;
    $("upload-text").textContent = `${Math.round((100 * done) / Math.max(1, total))}% of ${(total / 1e6).toFixed(1)} MB`;
  });
  $("upload-text").textContent = "uploaded";
  $("run").disabled = false;
  $("review-box").disabled = true;
  $("job-text").textContent = "";
  await openUpload(id);
}

// ------------------------------------------------------------------ playing

async function play() {
  state.playing = !state.playing;
  $("play").textContent = state.playing ? "❚❚" : "▶";
  $("play").setAttribute("aria-label", state.playing ? "pause" : "play");
  const interval = 1000 / (state.source.fps || 24);
  while (state.playing && state.frame < (state.source.frames || 1) - 1) {
    const started = performance.now();
    await goTo(state.frame + 1);
    await new Promise((r) => setTimeout(r, Math.max(0, interval - (performance.now() - started))));
  }
  state.playing = false;
  $("play").textContent = "▶";
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("video-file").addEventListener("change", (e) => e.target.files[0] && guarded(() => takeVideo(e.target.files[0])));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) guarded(() => takeVideo(e.dataTransfer.files[0]));
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    api.setKey($("api-key").value);
    say(null);
    guarded(refreshJobs);
  });
  $("show-jobs").addEventListener("click", () => {
    const jobs = $("jobs");
    jobs.hidden = !jobs.hidden;
    $("show-jobs").setAttribute("aria-expanded", String(!jobs.hidden));
    if (!jobs.hidden) guarded(refreshJobs);
  });
  $("refresh-jobs").addEventListener("click", () => guarded(refreshJobs));
  $("frame-slider").addEventListener("input", (e) => guarded(() => goTo(Number(e.target.value))));
  $("prev").addEventListener("click", () => guarded(() => goTo(state.frame - 1)));
  $("next").addEventListener("click", () => guarded(() => goTo(state.frame + 1)));
  $("play").addEventListener("click", () => guarded(play));
  $("add-object").addEventListener("click", addObject);
  $("undo").addEventListener("click", undoAndShow);
  $("mask-file").addEventListener("change", (e) => e.target.files[0] && guarded(() => loadMaskFile(e.target.files[0])));
  $("brush-size").addEventListener("input", (e) => { $("brush-size-label").textContent = e.target.value; });
  $("opacity").addEventListener("input", (e) => {
    stage.view.opacity = Number(e.target.value) / 100;
    $("opacity-label").textContent = `${e.target.value}%`;
    redrawMasks();
  });
  $("outlines").addEventListener("change", (e) => { stage.view.outlines = e.target.checked; redrawMasks(); });
  $("run").addEventListener("click", () => guarded(run));
  $("repropagate").addEventListener("click", () => guarded(repropagate));
  for (const button of document.querySelectorAll(".downloads button")) {
    button.addEventListener("click", () => guarded(() => download(button.dataset.format)));
  }
  const canvas = $("mask-canvas");
  let painting = false;
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.source || (state.job && state.job.status !== "succeeded")) return;
    const point = stage.point(e);
    if (tool() === "select") {
      guarded(() => selectAt(point));
      return;
    }
    remember();
    painting = true;
    canvas.setPointerCapture(e.pointerId);
    paintAt(point);
  });
  canvas.addEventListener("pointermove", (e) => painting && paintAt(stage.point(e)));
  canvas.addEventListener("pointerup", () => { painting = false; });
  document.addEventListener("keydown", onKey);
}

function onKey(e) {
  const typing = e.target.matches("input[type=text], input[type=password], select, textarea");
  if (typing || !state.source) return;
  const tools = { b: "brush", e: "eraser", s: "select" };
  if (e.key === "ArrowLeft") guarded(() => goTo(state.frame - 1));
  else if (e.key === "ArrowRight") guarded(() => goTo(state.frame + 1));
  else if (e.key === " " && !e.target.matches("button")) guarded(play);
  else if ((e.ctrlKey || e.metaKey) && e.key === "z") undoAndShow();
  else if (tools[e.key]) document.querySelector(`input[name=tool][value=${tools[e.key]}]`).checked = true;
  else if (e.key === "[" || e.key === "]") {
    const size = $("brush-size");
    size.value = String(Number(size.value) + (e.key === "]" ? 2 : -2));
    $("brush-size-label").textContent = size.value;
  } else if (/^[1-9]$/.test(e.key) && state.objects.some((o) => o.id === Number(e.key))) {
    state.current = Number(e.key);
    renderObjects();
  } else return;
  e.preventDefault();
}

async function start() {
  wire();
  state.info = await api.json("/v1/info");
  $("config").replaceChildren(new Option(state.info.config, state.info.config));
  const sizes = [["", `default (${state.info.default_size})`], ...[240, 360, 480]
    .filter((s) => s <= state.info.max_size).map((s) => [String(s), `${s}`])];
  $("size").replaceChildren(...sizes.map(([value, text]) => new Option(text, value)));
  $("key-form").hidden = !state.info.auth;
  const unfinished = api.unfinishedUploads();
  if (unfinished.length) {
    $("resume-hint").textContent = `Unfinished upload: ${unfinished.join(", ")}. Give the same file to resume it.`;
    $("resume-hint").hidden = false;
  }
}

guarded(start);
