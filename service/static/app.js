// The magvit playground: pick a task, give a video, watch it decode. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, task: null, file: null, inputUrl: null, loads: 0 };

// The condition region of each task, in fractions of the frame (as in models/tasks.py):
// known(t, x, y) is true where the model keeps the input; t, x, y in [0, 1).
const REGIONS = {
  fp: (f, n, T) => f < n, cfp: (f, n, T) => f < n,
  fi: (f, n, T) => f === 0 || f === T - 1,
  opc: (f, n, T, x, y) => inBand(x) && inBand(y),
  opv: (f, n, T, x) => inBand(x),
  oph: (f, n, T, x, y) => inBand(y),
  opd: (f, n, T, x) => inMoving(f, T, x),
  ipc: (f, n, T, x, y) => !(inBand(x) && inBand(y)),
  ipd: (f, n, T, x, y) => !(inBand(y) && inMoving(f, T, x)),
  cg: () => false,
};
const inBand = (v) => v >= 0.25 && v < 0.75;
const inMoving = (f, T, x) => {
  const left = Math.round((f * 0.5 * 64) / Math.max(T - 1, 1)) / 64; // band of width 1/2
  return x >= left && x < left + 0.5;
};

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function drawIcon(canvas, code) {
  const ctx = canvas.getContext("2d");
  const frames = 4, w = canvas.width / frames, h = canvas.height;
  for (let f = 0; f < frames; f++) {
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) {
      const known = REGIONS[code](f * 5, 5, 16, (x + 0.5) / 8, (y + 0.5) / 8);
      ctx.fillStyle = known ? "#3c3" : "#d33";
      ctx.fillRect(f * w + (x * (w - 2)) / 8, (y * h) / 8, (w - 2) / 8, h / 8);
    }
  }
}

async function loadTasks() {
  const token = ++state.loads; // only the latest load renders
  let info;
  try {
    info = await (await api("/v1/tasks")).json();
  } catch (err) {
    if (token === state.loads) showError(err.message);
    return;
  }
  if (token !== state.loads) return;
  state.info = info;
  showError("");
  const box = $("tasks");
  box.textContent = "";
  for (const task of state.info.tasks) {
    const label = document.createElement("label");
    label.className = "task";
    label.dataset.code = task.code;
    const icon = document.createElement("canvas");
    icon.width = 48; icon.height = 12;
    drawIcon(icon, task.code);
    label.innerHTML = `<input type="radio" name="task" value="${task.code}"><span><b>${task.code.toUpperCase()}</b> ${task.name}<small>${task.description}</small></span>`;
    label.prepend(icon);
    label.querySelector("input").addEventListener("change", () => selectTask(task));
    box.append(label);
  }
  $("class-id").innerHTML = "";
  state.info.class_names.forEach((name, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${i}: ${name}`;
    $("class-id").appendChild(option);
  });
  const keep = state.info.tasks.find((t) => state.task && t.code === state.task.code);
  const chosen = keep || state.info.tasks[0];
  selectTask(chosen);
  box.querySelector(`input[value="${chosen.code}"]`).checked = true;
}

function selectTask(task) {
  state.task = task;
  $("class-row").hidden = !task.needs_class;
  $("guidance-row").hidden = !task.needs_class;
  $("frames-row").hidden = !task.takes_frames;
  $("start-row").hidden = !task.takes_frames;
  $("frame-step-row").hidden = !task.needs_video;
  document.querySelector("input[name=frames]").max = String(state.info.max_frames);
  // Empty: the server reads one frame in as many as bring the upload nearest the model's rate.
  const rate = state.info.frame_rate;
  document.querySelector("input[name=frame_step]").placeholder = rate ? `auto (${rate} fps)` : "auto";
  $("video-inputs").hidden = !task.needs_video;
  $("input-hint").textContent = task.needs_video ? "Upload a video or pick a sample." : "No video needed for this task.";
  $("input-hint").hidden = task.needs_video && !!state.inputUrl;
}

function setInput(blob, name) {
  state.file = new File([blob], name, { type: blob.type || "video/webm" });
  if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
  state.inputUrl = URL.createObjectURL(state.file);
  for (const id of ["input-video", "side-input"]) $(id).src = state.inputUrl;
  $("input-hint").hidden = true;
}

function drawOverlay() {
  const canvas = $("overlay"), video = $("input-video");
  const ctx = canvas.getContext("2d");
  canvas.width = canvas.height = 64;
  ctx.clearRect(0, 0, 64, 64);
  if (state.task && state.info && state.inputUrl && state.task.takes_frames) {
    // Frame prediction keeps frames of the input: its last ones, or those from `start`, one
    // in `frame_step` (as typed; the automatic step is the server's).
    const fps = 8, n = state.info.cond_frames;
    const step = Math.max(1, Number(document.querySelector("input[name=frame_step]").value) || 1);
    const span = (n - 1) * step + 1;
    const total = Math.max(span, Math.round((video.duration || 0) * fps));
    const f = Math.floor((video.currentTime || 0) * fps);
    const typed = document.querySelector("input[name=start]").value;
    const first = typed === "" ? total - span : Number(typed);
    if (f < first || f >= first + span || (f - first) % step !== 0) {
      ctx.fillStyle = "rgba(221, 51, 51, 0.45)";
      ctx.fillRect(0, 0, 64, 64);
    }
  } else if (state.task && state.info && state.inputUrl && state.task.needs_video) {
    const T = state.info.video_shape[0];
    const fps = 8;
    const f = Math.min(T - 1, Math.floor((video.currentTime || 0) * fps) % T);
    for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) {
      if (!REGIONS[state.task.code](f, state.info.cond_frames, T, (x + 0.5) / 64, (y + 0.5) / 64)) {
        ctx.fillStyle = "rgba(221, 51, 51, 0.45)";
        ctx.fillRect(x, y, 1, 1);
      }
    }
  }
  requestAnimationFrame(drawOverlay);
}

async function loadSamples() {
  try {
    const samples = await (await fetch("/static/samples/index.json")).json();
    for (const s of samples) $("sample").insertAdjacentHTML("beforeend", `<option value="${s.file}">${s.name}</option>`);
  } catch (_) { /* no samples shipped */ }
}

async function* events(jobId) {
  // Server-sent events read with fetch, so that the API key can go in a header.
  const response = await api(`/v1/jobs/${jobId}/events?preview=1`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = chunk.split("\n").find((l) => l.startsWith("data: "));
      if (data) yield JSON.parse(data.slice(6));
    }
  }
}

async function run(event) {
  event.preventDefault();
  showError("");
  const task = state.task;
  if (!task) return;
  const form = new FormData($("params"));
  form.set("task", task.code);
  form.set("format", "webm");
  form.set("preview", "true");
  if (!task.needs_class) { form.delete("class_id"); form.delete("guidance_scale"); }
  for (const name of ["frames", "start"]) {
    if (!task.takes_frames || form.get(name) === "") form.delete(name);
  }
  if (!task.needs_video || form.get("frame_step") === "") form.delete("frame_step");
  if (task.needs_video) {
    if (!state.file) { showError("Choose a video or a sample first."); return; }
    form.set("video", state.file);
  }
  $("run").disabled = true;
  $("download").hidden = true;
  $("progress").value = 0;
  try {
    const job = await (await api("/v1/jobs", { method: "POST", body: form })).json();
    $("status").textContent = job.status;
    let last = job;
    for await (const update of events(job.id)) {
      last = update;
      $("progress").value = update.progress;
      $("status").textContent = update.step ? `${update.status}: step ${update.step} / ${update.num_steps}` : update.status;
      if (update.preview) $("preview").src = update.preview;
    }
    if (last.status !== "completed") {
      const info = await (await api(`/v1/jobs/${job.id}`)).json();
      throw new Error(info.error || `the job was ${info.status}`);
    }
    const blob = await (await api(`/v1/jobs/${job.id}/result`)).blob();
    const url = URL.createObjectURL(blob);
    $("result-video").src = url;
    $("download").href = url;
    $("download").hidden = false;
    $("status").textContent = "completed";
  } catch (err) {
    showError(err.message);
    $("status").textContent = "failed";
  } finally {
    $("run").disabled = false;
  }
}

$("video-file").addEventListener("change", (e) => { if (e.target.files[0]) setInput(e.target.files[0], e.target.files[0].name); });
$("sample").addEventListener("change", async (e) => {
  if (!e.target.value) return;
  const blob = await (await fetch(`/static/samples/${e.target.value}`)).blob();
  setInput(blob, e.target.value);
});
$("api-key").addEventListener("change", loadTasks);
$("params").addEventListener("submit", run);
loadTasks();
loadSamples();
requestAnimationFrame(drawOverlay);
