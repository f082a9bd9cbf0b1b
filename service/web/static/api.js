// The page's client of the public /v1 API. Every request goes to this page's own origin:
// paths must start with "/" (never a scheme or host), so the API key cannot leave it.

const KEY_STORAGE = "isvos-api-key";
const UPLOAD_PREFIX = "isvos-upload:";
const CHUNK = 4 << 20;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.code}: ${this.message}`;
  }
}

function ownPath(path) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) {
    throw new Error(`refusing a request outside this origin: ${path}`);
  }
  return path;
}

export class Api {
  constructor() {
    this.key = sessionStorage.getItem(KEY_STORAGE) || "";
  }

  setKey(key) {
    this.key = key.trim();
    if (this.key) sessionStorage.setItem(KEY_STORAGE, this.key);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    return headers;
  }

  async request(path, { method = "GET", body, headers = {}, signal, cache } = {}) {
    let response;
    try {
      response = await fetch(ownPath(path), {
        method, body, signal, cache, headers: this.headers(headers), credentials: "same-origin",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "unavailable", `the service cannot be reached (${error.message})`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json(path, options) {
    return (await this.request(path, options)).json();
  }

  async blob(path, options) {
    return (await this.request(path, options)).blob();
  }

  async form(path, fields, method = "POST") {
    const body = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      if (value === undefined || value === null) continue;
      if (value instanceof Blob) body.append(name, value, value.name || name);
      else body.append(name, String(value));
    }
    return this.json(path, { method, body });
  }

  // ---------------------------------------------------------------- resumable upload (tus)

  // Uploads ``file`` with the tus 1.0 protocol; an upload cut off (a reload, a lost network)
  // resumes where it stopped when the same file is given again. Returns the upload id.
  async upload(file, onProgress = () => {}) {
    const remembered = UPLOAD_PREFIX + [file.name, file.size, file.lastModified].join(":");
    let path = localStorage.getItem(remembered);
    let offset = path ? await this.uploadOffset(path) : null;
    if (offset === null) {
      path = await this.createUpload(file);
      localStorage.setItem(remembered, path);
      offset = 0;
    }
    onProgress(offset, file.size);
    while (offset < file.size) {
      offset = await this.patch(path, file.slice(offset, offset + CHUNK), offset,
        (sent) => onProgress(offset + sent, file.size));
      onProgress(offset, file.size);
    }
    localStorage.removeItem(remembered);
    return path.split("/").filter(Boolean).pop();
  }

  unfinishedUploads() {
    return Object.keys(localStorage).filter((k) => k.startsWith(UPLOAD_PREFIX))
      .map((k) => k.slice(UPLOAD_PREFIX.length).split(":")[0]);
  }

  async uploadOffset(path) {
    try {
      const response = await this.request(path, { method: "HEAD", headers: tus(), cache: "no-store" });
      return Number(response.headers.get("Upload-Offset"));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }
  }

  async createUpload(file) {
    const metadata = `filename ${b64(file.name)},filetype ${b64(file.type || "video/mp4")}`;
    const response = await this.request("/v1/uploads", {
      method: "POST",
      headers: tus({ "Upload-Length": String(file.size), "Upload-Metadata": metadata }),
    });
    // The Location may be absolute: keep its path, on this origin.
    return new URL(response.headers.get("Location"), window.location.href).pathname;
  }

  patch(path, chunk, offset, onSent) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PATCH", ownPath(path));
      const headers = this.headers(tus({
        "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream",
      }));
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => onSent(event.loaded);
      xhr.onload = async () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(Number(xhr.getResponseHeader("Upload-Offset")));
        } else {
          reject(await errorOf(new Response(xhr.responseText, { status: xhr.status })));
        }
      };
      xhr.onerror = () => reject(new ApiError(0, "unavailable", "the upload was cut off"));
      xhr.send(chunk);
    });
  }

  // ---------------------------------------------------------------- server-sent events

  // Follows /v1/jobs/{id}/events (fetch, so the API key goes in a header); reconnects with
  // Last-Event-ID until the job ends or ``signal`` aborts.
  async follow(jobId, onEvent, signal) {
    let last = null;
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        const headers = last ? { "Last-Event-ID": last } : {};
        const response = await this.request(`/v1/jobs/${jobId}/events`, { headers, signal });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0 || (end = buffer.indexOf("\r\n\r\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + (buffer[end] === "\r" ? 4 : 2));
            const event = parseEvent(block);
            if (!event) continue;
            if (event.id) last = event.id;
            if (onEvent(event) === false) return;
          }
        }
        return;
      } catch (error) {
        if (signal.aborted || (error instanceof ApiError && error.status && error.status < 500)) {
          return;
        }
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)));
      }
    }
  }
}

function parseEvent(block) {
  const event = { data: "" };
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") event.data += value;
    else if (field === "event" || field === "id") event[field] = value;
  }
  if (!event.data) return null;
  try {
    event.json = JSON.parse(event.data);
  } catch {
    event.json = null;
  }
  return event;
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.code) ({ code, message } = body);
    else if (body && body.detail) message = JSON.stringify(body.detail);
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

function tus(extra = {}) {
  return { "Tus-Resumable": "1.0.0", ...extra };
}

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}
