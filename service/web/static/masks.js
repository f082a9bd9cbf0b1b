// Label maps in the page: Uint8Array(width * height) of object ids, row-major.
// Colours are the DAVIS palette, as in every mask file the service writes.

export const PALETTE = (() => {
  const colours = [];
  for (let i = 0; i < 256; i++) {
    let r = 0, g = 0, b = 0, c = i;
    for (let j = 0; j < 8; j++) {
      r |= ((c >> 0) & 1) << (7 - j);
      g |= ((c >> 1) & 1) << (7 - j);
      b |= ((c >> 2) & 1) << (7 - j);
      c >>= 3;
    }
    colours.push([r, g, b]);
  }
  return colours;
})();

const ID_OF_COLOUR = new Map(PALETTE.map(([r, g, b], i) => [(r << 16) | (g << 8) | b, i]));

export function colourCss(id) {
  const [r, g, b] = PALETTE[id];
  return `rgb(${r}, ${g}, ${b})`;
}

// A COCO RLE ({size: [h, w], counts: compressed string}) as a row-major Uint8Array of 0/1.
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = [];
  const s = rle.counts;
  for (let p = 0, m = 0; p < s.length; m++) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++;
      k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (m > 2) x += counts[m - 2];
    counts.push(x);
  }
  const mask = new Uint8Array(h * w);
  let j = 0;
  counts.forEach((run, i) => {
    if (i % 2) {
      for (let end = j + run; j < end; j++) mask[(j % h) * w + Math.floor(j / h)] = 1;
    } else {
      j += run;
    }
  });
  return mask;
}

// Uncompressed COCO RLE counts (column-major, starting with a run of 0s) of labels == id.
export function encodeRle(labels, width, height, id) {
  const counts = [];
  let value = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const bit = labels[y * width + x] === id ? 1 : 0;
      if (bit !== value) {
        counts.push(run);
        value = bit;
        run = 0;
      }
      run++;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

export function objectIds(labels) {
  const seen = new Uint8Array(256);
  for (const v of labels) seen[v] = 1;
  const ids = [];
  for (let i = 1; i < 256; i++) if (seen[i]) ids.push(i);
  return ids;
}

// The masks of a job's frame from its indexed PNG (the browser decodes it to palette RGB).
export async function labelsFromPng(blob, width, height) {
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, width, height);
  const labels = new Uint8Array(width * height);
  for (let i = 0, p = 0; i < labels.length; i++, p += 4) {
    labels[i] = ID_OF_COLOUR.get((data[p] << 16) | (data[p + 1] << 8) | data[p + 2]) || 0;
  }
  return labels;
}

// A lossless PNG whose colours are the DAVIS palette (read back as ids by the service).
export async function pngOfLabels(labels, width, height, keep = null) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0, p = 0; i < labels.length; i++, p += 4) {
    const id = keep && !keep.has(labels[i]) ? 0 : labels[i];
    const [r, g, b] = PALETTE[id];
    image.data[p] = r;
    image.data[p + 1] = g;
    image.data[p + 2] = b;
    image.data[p + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  return canvas.convertToBlob({ type: "image/png" });
}

// Paints ``labels`` into ``image`` (ImageData of the same size): filled with ``opacity``,
// optionally only outlines, hidden objects left out.
export function drawOverlay(image, labels, width, { opacity, outlines, hidden }) {
  const data = image.data;
  const alpha = Math.round(255 * opacity);
  for (let i = 0, p = 0; i < labels.length; i++, p += 4) {
    const id = labels[i];
    if (!id || hidden.has(id)) {
      data[p + 3] = 0;
      continue;
    }
    const edge = (i % width && labels[i - 1] !== id) || (i % width < width - 1 && labels[i + 1] !== id)
      || (i >= width && labels[i - width] !== id) || (i + width < labels.length && labels[i + width] !== id);
    if (outlines && !edge) {
      data[p + 3] = 0;
      continue;
    }
    const [r, g, b] = PALETTE[id];
    data[p] = r;
    data[p + 1] = g;
    data[p + 2] = b;
    data[p + 3] = edge ? 255 : alpha;
  }
}

// Sets a disc of radius ``r`` around (cx, cy): to ``id`` (brush) or, where it is ``id``, to 0.
export function paintDisc(labels, width, height, cx, cy, r, id, erase) {
  const r2 = r * r;
  for (let y = Math.max(0, Math.floor(cy - r)); y <= Math.min(height - 1, Math.ceil(cy + r)); y++) {
    for (let x = Math.max(0, Math.floor(cx - r)); x <= Math.min(width - 1, Math.ceil(cx + r)); x++) {
      if ((x - cx) ** 2 + (y - cy) ** 2 > r2) continue;
      const i = y * width + x;
      if (erase) {
        if (labels[i] === id) labels[i] = 0;
      } else {
        labels[i] = id;
      }
    }
  }
}
