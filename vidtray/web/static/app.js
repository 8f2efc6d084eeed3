// vidtray library page. Plain JavaScript, no build step, nothing from the internet.
// Text from library.json only ever arrives inside fragments the server rendered (escaped by its templates),
// or is set with textContent here: no page script builds HTML from data.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = $('meta[name="vidtray-csrf"]').content;
  const body = document.body;
  const hooks = { library: null, queue: null };
  const POLL_MS = 1500;

  // -- talking to the server ------------------------------------------------------------------------------
  async function api(method, url, data) {
    const options = { method, credentials: "same-origin", headers: { "X-Vidtray-CSRF": csrf, Accept: "application/json" } };
    if (data !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(data);
    }
    const res = await fetch(url, options);
    let doc;
    try { doc = await res.json(); } catch (e) { doc = { ok: false, error: res.statusText || "no answer" }; }
    if (!res.ok) {
      const err = new Error(doc.error || res.statusText);
      err.status = res.status;
      err.doc = doc;
      throw err;
    }
    return doc;
  }

  async function fragment(url) {
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!res.ok) {
      const err = new Error(res.statusText);
      err.status = res.status;
      throw err;
    }
    return res.text();
  }

  const shown = new WeakMap();
  function swap(el, html) {
    if (shown.get(el) === html) return false;
    el.innerHTML = html;
    shown.set(el, html);
    return true;
  }

  function size(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${units[i]}`;
  }
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const basename = (path) => path.split(/[\\/]/).pop();

  function banner(text) {
    const el = $("#banner");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function say(el, text, error = false) {
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", error);
  }

  // The confirmation dialog: resolves true when the user chose the red button.
  function ask(text, list = [], ok = "Delete") {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    const ul = $("#confirm-list");
    ul.replaceChildren(...list.slice(0, 50).map((line) => {
      const li = document.createElement("li");
      li.textContent = line;
      return li;
    }));
    if (list.length > 50) ul.append(Object.assign(document.createElement("li"), { textContent: `and ${list.length - 50} more` }));
    $("#confirm-ok").textContent = ok;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
  }

  // -- live updates: a cheap version of the library and of the queue, polled while the page is visible -------
  let libraryVersion = body.dataset.libraryVersion;
  let queueVersion = body.dataset.queueVersion;
  let failures = 0;
  async function poll() {
    if (document.visibilityState !== "visible") return;
    let v;
    try {
      v = await api("GET", "/api/version");
    } catch (err) {
      failures += 1;
      if (failures >= 2) banner("The library page has stopped. Open the library again from the tray, or run `vidtray library serve`.");
      return;
    }
    if (failures >= 2) banner("");
    failures = 0;
    const count = $("#queue-count");
    if (count) {
      count.textContent = v.active_jobs;
      count.hidden = !v.active_jobs;
    }
    if (v.library !== libraryVersion) {
      libraryVersion = v.library;
      if (hooks.library) await hooks.library();
    }
    if (v.queue !== queueVersion) {
      queueVersion = v.queue;
      if (hooks.queue) await hooks.queue();
    }
  }
  setInterval(poll, POLL_MS);
  document.addEventListener("visibilitychange", poll);

  // -- the gallery --------------------------------------------------------------------------------------------
  function gallery() {
    const form = $("#filters");
    const wrap = $("#grid-wrap");
    let timer = 0;
    let latest = 0;
    let loading = false;

    const query = () => {
      const params = new URLSearchParams(new FormData(form));
      for (const [key, value] of [...params]) if (!value) params.delete(key);
      if (params.get("sort") === "newest") params.delete("sort");
      return params;
    };

    async function reload(limit) {
      const params = query();
      history.replaceState(null, "", params.toString() ? `/?${params}` : "/");
      params.set("fragment", "grid");
      if (limit) params.set("limit", String(limit));
      const mine = ++latest;
      const html = await fragment(`/?${params}`);
      if (mine !== latest) return; // a newer search has been sent meanwhile
      swap(wrap, html);
      watchMore();
    }

    async function more() {
      const link = $("#more");
      if (!link || loading) return;
      loading = true;
      try {
        const params = new URLSearchParams(link.dataset.next.slice(1));
        params.set("fragment", "cards");
        const template = document.createElement("template");
        template.innerHTML = await fragment(`/?${params}`);
        link.replaceWith(template.content);
      } finally {
        loading = false;
      }
      watchMore();
    }

    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) more();
    }, { rootMargin: "800px" });
    function watchMore() {
      observer.disconnect();
      const link = $("#more");
      if (link) observer.observe(link);
    }

    form.addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => reload(), e.target.type === "search" ? 120 : 0);
    });
    form.addEventListener("submit", (e) => { e.preventDefault(); reload(); });
    wrap.addEventListener("click", (e) => {
      if (e.target.closest("#more a")) { e.preventDefault(); more(); }
    });

    // Hover plays the clip in place, muted; leaving stops it and lets the browser drop it.
    wrap.addEventListener("mouseover", (e) => {
      const thumb = e.target.closest(".thumb");
      if (!thumb || !thumb.dataset.video || $("video", thumb)) return;
      const video = Object.assign(document.createElement("video"), { muted: true, loop: true, playsInline: true, preload: "auto" });
      video.src = thumb.dataset.video;
      thumb.append(video);
      video.play().catch(() => {});
      thumb.addEventListener("mouseleave", () => {
        video.pause();
        video.removeAttribute("src");
        video.load();
        video.remove();
      }, { once: true });
    });

    hooks.library = () => reload(document.querySelectorAll("#grid .card").length);
    shown.set(wrap, wrap.innerHTML);
    watchMore();
  }

  // -- one item -----------------------------------------------------------------------------------------------
  function item() {
    const details = $("#details");
    const ref = $(".item").dataset.ref;
    const message = (text, error) => say($("#item-msg"), text, error);

    async function refresh() {
      try {
        swap(details, await fragment(`/item/${ref}?fragment=details`));
      } catch (err) {
        if (err.status === 404) banner("This video is no longer in the library.");
      }
    }

    async function act(button) {
      const action = button.dataset.action;
      const title = button.dataset.title || "";
      if (action === "pin") {
        await api("PATCH", `/api/items/${ref}`, { pinned: button.dataset.value === "true" });
        await refresh();
        message(button.dataset.value === "true" ? "Pinned: cleanup never deletes it." : "Unpinned.");
      } else if (action === "again" || action === "vary") {
        const done = await api("POST", `/api/items/${ref}/again`, { vary: action === "vary" });
        message(`Queued as job ${done.job.id}${action === "vary" ? ` with seed ${done.job.request.seed}` : ""}. See the Queue page.`);
      } else if (action === "reveal") {
        await api("POST", `/api/items/${ref}/reveal`);
        message("Opened in the file manager.");
      } else if (action === "delete") {
        const where = button.dataset.trash === "true" ? "to the trash" : "for good (prune_to_trash = false)";
        if (!await ask(`Delete “${title}” ${where}? Its sidecar and thumbnail go with it.`, [], "Delete")) return;
        await api("DELETE", `/api/items/${ref}`);
        location.assign("/");
      } else if (action === "forget") {
        if (!await ask(`Remove “${title}” from the library? The file stays where it is, and later scans leave it out.`, [], "Remove")) return;
        await api("DELETE", `/api/items/${ref}/entry`);
        location.assign("/");
      }
    }

    details.addEventListener("click", async (e) => {
      const button = e.target.closest("button[data-action]");
      if (!button) return;
      try { await act(button); } catch (err) { message(err.message, true); }
    });
    details.addEventListener("submit", async (e) => {
      if (e.target.id !== "edit") return;
      e.preventDefault();
      const data = new FormData(e.target);
      try {
        await api("PATCH", `/api/items/${ref}`, {
          title: data.get("title"), tags: data.get("tags"), scheduled_at: data.get("scheduled_at") || null,
        });
        await refresh();
        message("Saved.");
      } catch (err) { message(err.message, true); }
    });
    // Another app's edit shows up, unless the user is typing in the form right now.
    hooks.library = () => (details.contains(document.activeElement) && document.activeElement.matches("input, textarea")) ? null : refresh();
    shown.set(details, details.innerHTML);
  }

  // -- the queue ----------------------------------------------------------------------------------------------
  function queue() {
    const form = $("#new-video");
    const jobs = $("#jobs");
    const message = (text, error) => say($("#form-msg"), text, error);
    const fieldError = (name, text) => say($(`.field-error[data-for="${name}"]`, form), text || "", true);
    const timers = {};

    async function refresh() { swap(jobs, await fragment("/queue?fragment=jobs")); }

    async function check(input) {
      const params = new URLSearchParams({ field: input.name, value: input.value });
      try { fieldError(input.name, (await api("GET", `/api/form/check?${params}`)).error); } catch (err) { /* checked again on submit */ }
    }

    form.addEventListener("input", (e) => {
      const input = e.target;
      if (!input.name || input.name === "model") return;
      clearTimeout(timers[input.name]);
      timers[input.name] = setTimeout(() => check(input), 250);
    });
    form.elements.model.addEventListener("change", async (e) => {
      await check(e.target);
      try {
        const { defaults } = await api("GET", `/api/form/defaults?${new URLSearchParams({ model: e.target.value })}`);
        for (const [name, value] of Object.entries(defaults)) if (form.elements[name]) form.elements[name].value = value;
        form.dataset.defaultsFor = e.target.value;
      } catch (err) { /* keep what is there */ }
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
      try {
        const done = await api("POST", "/api/queue", Object.fromEntries(new FormData(form)));
        message(`Queued as job ${done.job.id}.`);
        form.elements.prompt.value = "";
        await refresh();
      } catch (err) {
        for (const [name, text] of Object.entries((err.doc && err.doc.errors) || {})) fieldError(name, text);
        message(err.message, true);
      }
    });
    jobs.addEventListener("click", async (e) => {
      const button = e.target.closest('button[data-action="cancel"]');
      if (!button) return;
      button.disabled = true;
      try { await api("POST", `/api/queue/${encodeURIComponent(button.dataset.job)}/cancel`); } catch (err) { message(err.message, true); }
      await refresh();
    });
    hooks.queue = refresh;
    hooks.library = refresh; // a finished job links to its video once the library lists it
    shown.set(jobs, jobs.innerHTML);
  }

  // -- storage ------------------------------------------------------------------------------------------------
  function storage() {
    const panel = $("#storage");
    const message = (text, error) => say($("#storage-msg"), text, error);
    async function refresh() { swap(panel, await fragment("/storage?fragment=panel")); }

    function request(button) {
      const kind = button.dataset.plan;
      if (kind === "videos") return { what: "videos", older_than_days: null };
      if (kind === "videos-older") return { what: "videos", older_than_days: Number($("#older-days").value) };
      if (kind === "model") return { what: "model", repo_id: button.dataset.repo };
      return { what: "models" };
    }

    function question(plan) {
      if (plan.repos) {
        const names = plan.repos.map((r) => r.repo_id + (r.broken ? " (broken)" : ""));
        return [`Delete ${plan.repos.length === 1 ? names[0] : plural(plan.repos.length, "model")} (${size(plan.expected_freed_bytes)}) from the model cache? It downloads again when needed.`, plan.repos.length === 1 ? [] : names];
      }
      const where = plan.to_trash ? "to the trash" : "for good";
      const kept = plan.kept_count ? ` ${plural(plan.kept_count, "video")} ${plan.kept_count === 1 ? "stays" : "stay"} (pinned, scheduled or new to the library).` : "";
      return [`Delete ${plural(plan.count, "video")} (${size(plan.freed_bytes)}) ${where}?${kept}`, plan.deleted.map((d) => basename(d.path))];
    }

    panel.addEventListener("click", async (e) => {
      const button = e.target.closest("button[data-plan]");
      if (!button) return;
      try {
        const plan = await api("POST", "/api/storage/plan", request(button));
        if (!plan.plan) {
          message(plan.kept_count ? `Nothing to delete: ${plural(plan.kept_count, "video")} kept (pinned, scheduled or new to the library).` : "Nothing to delete.");
          return;
        }
        const [text, list] = question(plan);
        if (!await ask(text, list)) return;
        const done = await api("POST", "/api/storage/execute", { plan: plan.plan });
        await refresh();
        if (done.kind === "videos") {
          const skipped = done.skipped.length ? ` ${plural(done.skipped.length, "file")} left alone (changed since the question).` : "";
          message(`Deleted ${plural(done.deleted.length, "video")}, ${size(done.freed_bytes)}.${skipped}`);
        } else {
          message(`Freed ${size(done.freed_bytes)}.`);
        }
      } catch (err) { message(err.message, true); }
    });
    let pending = 0;
    hooks.library = () => { clearTimeout(pending); pending = setTimeout(refresh, 1000); };
    shown.set(panel, panel.innerHTML);
  }

  const pages = { gallery, item, queue, storage };
  if (pages[body.dataset.page]) pages[body.dataset.page]();
})();
