// The task page: follows the task without reloading (SSE, else polling its JSON), draws its buttons,
// clicks them through the pages' own POST routes, and completes modals (code 21).
"use strict";
(function () {
  const root = document.getElementById("task");
  const POLL_MS = 500;
  const DONE = ["SUCCESS", "FAILURE", "CANCEL"];
  const el = (id) => document.getElementById(id);
  const urlFor = (template, id) => template.replace("TASK_ID", encodeURIComponent(id));
  let shownImage = el("task-image").getAttribute("src") || "";

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf},
      body: JSON.stringify(body),
    }).then((r) => r.json());
  }

  function render(task) {
    const status = el("status");
    status.textContent = task.status;
    status.className = "status " + task.status;
    const progress = task.progress || "0%";
    el("progress").textContent = progress;
    el("bar").value = parseInt(progress, 10) || 0;
    el("fail").textContent = task.failReason || "";
    if (task.imageUrl && task.imageUrl !== shownImage) {
      shownImage = task.imageUrl;
      el("task-image").src = task.imageUrl;
      el("task-image").hidden = false;
    }
    drawButtons(task);
  }

  function drawButtons(task) {
    const box = el("buttons");
    const ids = (task.buttons || []).map((b) => b.customId).join("|");
    if (box.dataset.ids === ids) return;
    box.dataset.ids = ids;
    box.replaceChildren();
    for (const b of task.buttons || []) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = [b.emoji, b.label].filter(Boolean).join(" ");
      button.dataset.customId = b.customId;
      button.title = b.label || b.customId.split("::")[2] || b.customId;
      button.addEventListener("click", () => click(b));
      box.appendChild(button);
    }
  }

  function click(b) {
    el("action-error").textContent = "";
    post(root.dataset.actionUrl, {customId: b.customId}).then((answer) => {
      if (answer.code === 21) return openModal(answer.result, b);
      if ((answer.code === 1 || answer.code === 22) && answer.result) {
        if (answer.result === root.dataset.taskId) { el("action-error").textContent = answer.description; return; }
        window.location.href = urlFor(root.dataset.pageUrl, answer.result);
        return;
      }
      el("action-error").textContent = answer.description || "the action was refused";
    }).catch((err) => { el("action-error").textContent = String(err); });
  }

  // --- modals: a prompt, and for Vary (Region) a rectangle drawn on the image (or a mask file) ---
  let modalTask = null;
  let rect = null;

  function openModal(taskId, b) {
    modalTask = taskId;
    rect = null;
    el("modal-title").textContent = [b.emoji, b.label].filter(Boolean).join(" ") || "Remix";
    el("modal-error").textContent = "";
    const region = b.customId.startsWith("MJ::Inpaint");
    el("region").hidden = !region;
    fetch(urlFor(root.dataset.pageUrl, taskId) + ".json", {credentials: "same-origin"})
      .then((r) => r.json()).then((t) => {
        el("modal-prompt").value = (t.properties && t.properties.finalPrompt) || t.prompt || "";
      });
    if (region) drawRegion();
    el("modal").showModal();
  }

  function drawRegion() {
    const canvas = el("region-canvas");
    const image = el("task-image");
    const scale = Math.min(1, 480 / (image.naturalWidth || 480));
    canvas.width = Math.round((image.naturalWidth || 480) * scale);
    canvas.height = Math.round((image.naturalHeight || 480) * scale);
    const ctx = canvas.getContext("2d");
    const paint = () => {
      ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
      if (rect) {
        ctx.fillStyle = "rgba(255,255,255,0.45)";
        ctx.fillRect(rect.x, rect.y, rect.w, rect.h);
        ctx.strokeStyle = "#e33"; ctx.strokeRect(rect.x, rect.y, rect.w, rect.h);
      }
    };
    let start = null;
    const at = (e) => { const r = canvas.getBoundingClientRect(); return {x: e.clientX - r.left, y: e.clientY - r.top}; };
    canvas.onmousedown = (e) => { start = at(e); };
    canvas.onmousemove = (e) => {
      if (!start) return;
      const p = at(e);
      rect = {x: Math.min(start.x, p.x), y: Math.min(start.y, p.y), w: Math.abs(p.x - start.x), h: Math.abs(p.y - start.y)};
      paint();
    };
    canvas.onmouseup = () => { start = null; };
    canvas.dataset.scale = String(scale);
    paint();
  }

  function maskFromRect() {
    // Full-size PNG: black, the chosen rectangle white (what /submit/modal's maskBase64 expects).
    const image = el("task-image");
    const scale = parseFloat(el("region-canvas").dataset.scale || "1");
    const mask = document.createElement("canvas");
    mask.width = image.naturalWidth; mask.height = image.naturalHeight;
    const ctx = mask.getContext("2d");
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, mask.width, mask.height);
    ctx.fillStyle = "#fff"; ctx.fillRect(rect.x / scale, rect.y / scale, rect.w / scale, rect.h / scale);
    return mask.toDataURL("image/png");
  }

  function maskFromFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  el("modal-cancel").addEventListener("click", () => el("modal").close());
  el("modal-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = el("mask-file").files[0];
    let mask = Promise.resolve(null);
    if (!el("region").hidden) {
      if (file) mask = maskFromFile(file);
      else if (rect && rect.w > 2 && rect.h > 2) mask = Promise.resolve(maskFromRect());
      else { el("modal-error").textContent = "Drag a rectangle over the area to vary, or choose a mask file."; return; }
    }
    mask.then((maskBase64) => post(urlFor(root.dataset.modalUrl, modalTask), {prompt: el("modal-prompt").value, maskBase64}))
      .then((answer) => {
        if ((answer.code === 1 || answer.code === 22) && answer.result) {
          window.location.href = urlFor(root.dataset.pageUrl, answer.result);
        } else {
          el("modal-error").textContent = answer.description || "the modal was refused";
        }
      }).catch((err) => { el("modal-error").textContent = String(err); });
  });

  // --- following the task: Server-Sent Events when the server has them, else polling ---
  function follow() {
    if (!root.dataset.streamUrl || !window.EventSource) return poll();
    const events = new EventSource(root.dataset.streamUrl, {withCredentials: true});
    let done = false;
    events.addEventListener("task", (message) => {
      const task = JSON.parse(message.data);
      render(task);
      if (DONE.includes(task.status)) { done = true; events.close(); }
    });
    events.onerror = () => {
      // A dropped stream reconnects by itself; a refused one (or none at all) falls back to polling.
      if (!done && events.readyState === EventSource.CLOSED) poll();
    };
  }

  function poll() {
    fetch(root.dataset.jsonUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then((r) => r.json()).then((task) => {
        render(task);
        if (!DONE.includes(task.status)) setTimeout(poll, POLL_MS);
      }).catch(() => setTimeout(poll, POLL_MS * 4));
  }
  follow();
})();
