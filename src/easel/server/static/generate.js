// The generate page: queue a job through /api/jobs, follow it over server-sent events,
// then show each image with the content credentials read back from the published file.
(function () {
  const form = document.getElementById("generate-form");
  const csrf = form.dataset.csrf;
  const statusEl = document.getElementById("status");
  const bar = document.getElementById("progress");
  const errorEl = document.getElementById("error");
  const results = document.getElementById("results");
  const cancelBtn = document.getElementById("cancel");
  let current = null;

  function fileB64(input) {
    const file = input.files[0];
    if (!file) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",")[1]);
      reader.onerror = reject;
      reader.readAsDataURL(file);
    });
  }

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = false;
  }

  async function api(path, options) {
    const opts = Object.assign({credentials: "same-origin", headers: {}}, options || {});
    opts.headers["X-CSRF-Token"] = csrf;
    const response = await fetch(path, opts);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error + (body.hint ? " (" + body.hint + ")" : ""));
    return body;
  }

  async function showImage(id) {
    const fig = document.createElement("figure");
    fig.className = "card result";
    fig.innerHTML = '<img width="192" height="192" alt="generation ' + id + '" src="/api/images/' + id + '">' +
      '<figcaption>checking credentials…</figcaption>';
    results.appendChild(fig);
    const cred = await api("/api/images/" + id + "/credentials");
    const prov = cred.provenance || {};
    fig.querySelector("figcaption").innerHTML =
      '<strong class="credentials">Content credentials: ' + (cred.credentials_state || "none") + "</strong><br>" +
      "generation <code>" + id + "</code><br>model " + (prov.model_id || "?") + " · seed " + prov.seed +
      (prov.signer ? "<br>signed by " + prov.signer : "") +
      "<br>watermark: " + ((prov.watermark && prov.watermark.scheme) || "none");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorEl.hidden = true;
    results.innerHTML = "";
    bar.value = 0;
    const seed = document.getElementById("seed").value;
    const body = {
      prompt: document.getElementById("prompt").value,
      style: document.getElementById("style").value || null,
      n: Number(document.getElementById("n").value),
      steps: Number(document.getElementById("steps").value),
      guidance: Number(document.getElementById("guidance").value),
      seed: seed === "" ? null : Number(seed),
      strength: Number(document.getElementById("strength").value),
      include_prompt: document.getElementById("include_prompt").checked,
      init_image: await fileB64(document.getElementById("init_image")),
      mask_image: await fileB64(document.getElementById("mask_image")),
    };
    let job;
    try {
      job = await api("/api/jobs", {method: "POST", body: JSON.stringify(body),
                                    headers: {"Content-Type": "application/json"}});
    } catch (err) { showError(err.message); return; }
    current = job.id;
    cancelBtn.disabled = false;
    statusEl.textContent = "queued (job " + job.id + ")";
    const source = new EventSource("/api/jobs/" + job.id + "/events");
    source.addEventListener("job", async (msg) => {
      const snap = JSON.parse(msg.data);
      bar.value = snap.progress;
      statusEl.textContent = snap.state + (snap.total ? " — step " + snap.step + " of " + snap.total : "");
      if (["done", "failed", "cancelled"].includes(snap.state)) {
        source.close();
        cancelBtn.disabled = true;
        if (snap.state === "failed") showError(snap.error);
        for (const id of snap.result) { await showImage(id); }
        if (snap.state === "done") statusEl.textContent = "done: " + snap.result.length + " image(s)";
      }
    });
    source.onerror = () => { source.close(); };
  });

  cancelBtn.addEventListener("click", async () => {
    if (!current) return;
    try { await api("/api/jobs/" + current + "/cancel", {method: "POST"}); } catch (err) { showError(err.message); }
  });
})();
