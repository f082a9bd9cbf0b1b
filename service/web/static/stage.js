// The stage: the frame and its masks on two canvases, and the pointer on them.

import { drawOverlay } from "./masks.js";

export class Stage {
  constructor(frameCanvas, maskCanvas) {
    this.frameCanvas = frameCanvas;
    this.maskCanvas = maskCanvas;
    this.width = 0;
    this.height = 0;
    this.view = { opacity: 0.55, outlines: false, hidden: new Set() };
  }

  resize(width, height) {
    this.width = width;
    this.height = height;
    for (const canvas of [this.frameCanvas, this.maskCanvas]) {
      canvas.width = width;
      canvas.height = height;
    }
    const box = this.frameCanvas.parentElement.style;
    box.aspectRatio = `${width} / ${height}`;
    box.setProperty("--aspect", String(width / height));
  }

  draw(bitmap, labels) {
    const frame = this.frameCanvas.getContext("2d");
    if (bitmap) frame.drawImage(bitmap, 0, 0, this.width, this.height);
    else frame.clearRect(0, 0, this.width, this.height);
    this.drawMasks(labels);
  }

  drawMasks(labels) {
    const context = this.maskCanvas.getContext("2d");
    if (!labels) {
      context.clearRect(0, 0, this.width, this.height);
      return;
    }
    const image = context.createImageData(this.width, this.height);
    drawOverlay(image, labels, this.width, this.view);
    context.putImageData(image, 0, 0);
  }

  // Image coordinates (integers) of a pointer event on the stage.
  point(event) {
    const box = this.maskCanvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - box.left) / box.width) * this.width);
    const y = Math.floor(((event.clientY - box.top) / box.height) * this.height);
    return { x: Math.min(Math.max(x, 0), this.width - 1), y: Math.min(Math.max(y, 0), this.height - 1) };
  }
}

// A small least-recently-used cache (frame images, label maps).
export class Lru {
  constructor(size) {
    this.size = size;
    this.items = new Map();
  }

  get(key) {
    if (!this.items.has(key)) return undefined;
    const value = this.items.get(key);
    this.items.delete(key);
    this.items.set(key, value);
    return value;
  }

  set(key, value) {
    this.items.delete(key);
    this.items.set(key, value);
    while (this.items.size > this.size) this.items.delete(this.items.keys().next().value);
  }

  delete(key) {
    this.items.delete(key);
  }

  clear() {
    this.items.clear();
  }

  deleteFrom(frame) {
    for (const key of [...this.items.keys()]) if (key >= frame) this.items.delete(key);
  }
}
