/* PicGate admin console. Plain JS, no build step, no inline handlers (the CSP forbids them).
 * Strings come from the page's #i18n JSON block; every state change sends X-CSRF-Token. */
"use strict";

(function () {
  const STRINGS = JSON.parse(document.getElementById("i18n").textContent || "{}");
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function t(key, params) {
    let text = STRINGS[key] || key;
    if (params) {
      for (const [name, value] of Object.entries(params)) {
        text = text.split("{" + name + "}").join(String(value));
      }
    }
    return text;
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") init.headers["X-CSRF-Token"] = CSRF;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      if (resp.status === 401) { window.location.href = "/admin/login"; }
      const err = new Error((data && data.error && data.error.message) || ("HTTP " + resp.status));
      err.status = resp.status;
      err.param = data && data.error ? data.error.param : null;
      err.code = data && data.error ? data.error.code : null;
      throw err;
    }
    return data;
  }

  let toastTimer = null;
  function toast(message, isError) {
    const box = $("#toast");
    if (!box) return;
    box.textContent = message;
    box.classList.toggle("error", !!isError);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  function fmtBytes(n) {
    n = Number(n) || 0;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      toast(t("js.copied"));
    } catch (e) {
      toast(t("js.copy_failed"), true);
    }
  }

  function setStatus(el, text, kind) {
    if (!el) return;
    el.textContent = text;
    el.classList.remove("ok", "error", "pending");
    if (kind) el.classList.add(kind);
  }

  function bindCommon() {
    $$("time[datetime]").forEach((el) => { el.textContent = fmtTime(el.getAttribute("datetime")); });
    $$("[data-copy]").forEach((btn) => {
      btn.addEventListener("click", () => {
        const input = $(btn.dataset.copy);
        if (input) { input.select(); copyText(input.value); }
      });
    });
  }

  // -- dashboard -----------------------------------------------------------------------------

  async function initDashboard() {
    const cell = $("#r2-health");
    if (!cell || cell.dataset.configured !== "yes") return;
    try {
      const health = await api("GET", "/admin/api/health");
      const r2 = health.r2;
      const pill = document.createElement("span");
      pill.className = "pill " + (r2.reachable ? "ok" : "err");
      pill.textContent = r2.reachable ? t("js.r2_ok") : t("js.r2_down");
      cell.replaceChildren(pill);
      if (!r2.reachable && r2.detail) {
        const detail = document.createElement("span");
        detail.className = "muted";
        detail.textContent = " " + r2.detail;
        cell.appendChild(detail);
      }
    } catch (e) {
      cell.textContent = t("js.request_failed", { message: e.message });
    }
  }

  // -- settings ------------------------------------------------------------------------------

  function initSettings() {
    const form = $("#settings-form");
    const state = $("#save-state");
    const dirty = new Map(); // name -> edit counter when it last changed
    let edits = 0;
    let timer = null;
    let saving = null;

    function fieldValue(input) {
      if (input.type === "checkbox") return input.checked;
      return input.value;
    }

    function fieldStatus(name) { return $('[data-status-for="' + name + '"]'); }

    function applyGroups(groups) {
      for (const group of groups) {
        for (const f of group.fields) {
          if (f.kind !== "secret") continue;
          const input = $("#f-" + f.name);
          if (!input || dirty.has(f.name)) continue;
          input.value = "";
          input.placeholder = f.is_set ? t(f.fixed ? "js.secret_fixed" : "js.secret_set", { masked: f.value }) : t("js.secret_unset");
        }
      }
    }

    async function save() {
      clearTimeout(timer);
      if (saving) await saving;
      const values = {};
      const sent = new Map();
      for (const [name, stamp] of dirty) {
        const input = $("#f-" + name);
        if (!input) continue;
        if (input.dataset.kind === "secret" && input.value === "" && !input.dataset.clear) {
          dirty.delete(name);
          continue;
        }
        values[name] = input.dataset.clear ? null : fieldValue(input);
        sent.set(name, stamp);
      }
      if (sent.size === 0) return;
      setStatus(state, t("js.saving"), "pending");
      saving = (async () => {
        try {
          const result = await api("PUT", "/admin/api/settings", { values });
          for (const [name, stamp] of sent) {
            if (dirty.get(name) === stamp) dirty.delete(name);
            const input = $("#f-" + name);
            if (input) delete input.dataset.clear;
            const field = input && input.closest(".field");
            if (field) field.classList.remove("has-error");
            setStatus(fieldStatus(name), "✓ " + t("js.saved"), "ok");
          }
          applyGroups(result.groups);
          setStatus(state, "✓ " + t("js.saved"), "ok");
        } catch (e) {
          setStatus(state, t("js.save_failed", { message: "" }), "error");
          const target = e.param && sent.has(e.param) ? [e.param] : Array.from(sent.keys());
          for (const name of target) {
            const input = $("#f-" + name);
            const field = input && input.closest(".field");
            if (field) field.classList.add("has-error");
            setStatus(fieldStatus(name), t("js.save_failed", { message: e.message }), "error");
          }
        } finally {
          saving = null;
        }
      })();
      await saving;
    }

    function changed(event) {
      const input = event.target;
      if (!input.name || input.disabled) return;
      input.dataset.kind = input.closest(".field").dataset.kind;
      dirty.set(input.name, ++edits);
      setStatus(state, t("js.unsaved"), "pending");
      setStatus(fieldStatus(input.name), "", null);
      clearTimeout(timer);
      timer = setTimeout(save, 2000);
    }

    form.addEventListener("input", changed);
    form.addEventListener("change", changed);
    form.addEventListener("submit", (e) => { e.preventDefault(); save(); });

    $$("[data-clear]").forEach((btn) => {
      btn.addEventListener("click", () => {
        if (!window.confirm(t("js.confirm_clear_secret"))) return;
        const input = $("#f-" + btn.dataset.clear);
        input.value = "";
        input.dataset.kind = "secret";
        input.dataset.clear = "1";
        dirty.set(input.name, ++edits);
        save();
      });
    });

    async function runTest(button, resultEl, path, render) {
      button.disabled = true;
      setStatus(resultEl, t("js.testing"), "pending");
      try {
        await save();
        render(await api("POST", path));
      } catch (e) {
        setStatus(resultEl, t("js.request_failed", { message: e.message }), "error");
      } finally {
        button.disabled = false;
      }
    }

    const upstreamBtn = $("#test-upstream");
    upstreamBtn.addEventListener("click", () => {
      const out = $("#test-upstream-result");
      runTest(upstreamBtn, out, "/admin/api/settings/test-upstream", (r) => {
        if (r.detail === "not_configured") return setStatus(out, t("js.not_configured"), "error");
        if (!r.ok) {
          return setStatus(out, t("js.test_failed", { status: r.status, latency: r.latency_ms, detail: r.detail }), "error");
        }
        let text = t("js.test_ok_upstream", { status: r.status, latency: r.latency_ms, models: r.models });
        if (!r.model_found) text += " " + t("js.test_model_missing");
        setStatus(out, text, "ok");
      });
    });

    const r2Btn = $("#test-r2");
    r2Btn.addEventListener("click", () => {
      const out = $("#test-r2-result");
      const list = $("#test-r2-steps");
      list.replaceChildren();
      runTest(r2Btn, out, "/admin/api/settings/test-r2", (r) => {
        if (r.detail === "not_configured") return setStatus(out, t("js.not_configured"), "error");
        for (const step of r.steps) {
          const li = document.createElement("li");
          li.className = step.ok ? "ok" : "error";
          li.textContent = (step.ok ? "✓ " : "✗ ") + t("step." + step.step) + " — " + step.millis + " ms — " + step.detail;
          list.appendChild(li);
        }
        setStatus(out, r.ok ? t("js.r2_test_ok") : t("js.r2_test_failed"), r.ok ? "ok" : "error");
      });
    });

    const genBtn = $("#generate-key");
    if (genBtn) {
      genBtn.addEventListener("click", async () => {
        if (!window.confirm(t("js.confirm_generate"))) return;
        try {
          const r = await api("POST", "/admin/api/settings/generate-key");
          $("#new-key").value = r.key;
          $("#new-key-box").hidden = false;
          const input = $("#f-gateway_api_key");
          input.value = "";
          input.placeholder = t("js.secret_set", { masked: r.masked });
          setStatus(fieldStatus("gateway_api_key"), "✓ " + t("js.key_generated"), "ok");
        } catch (e) {
          setStatus(fieldStatus("gateway_api_key"), t("js.request_failed", { message: e.message }), "error");
        }
      });
    }
  }

  // -- cache ---------------------------------------------------------------------------------

  function initCache() {
    const bar = $("#cap-bar");

    function drawBar(used, cap) {
      const fill = $("#cap-fill");
      bar.dataset.used = used;
      bar.dataset.cap = cap;
      bar.classList.remove("warn", "danger");
      if (!cap) {
        fill.style.width = "0%";
        $("#cap-text").textContent = t("js.cap_none", { used: fmtBytes(used) });
        return;
      }
      const pct = Math.min(100, (used / cap) * 100);
      fill.style.width = pct.toFixed(1) + "%";
      if (pct > 95) bar.classList.add("danger");
      else if (pct > 80) bar.classList.add("warn");
      $("#cap-text").textContent = t("js.cap_usage", { used: fmtBytes(used), cap: fmtBytes(cap), pct: pct.toFixed(1) });
    }

    function showStats(stats) {
      for (const key of ["local", "pending", "failed"]) {
        const el = $('#cache-stats [data-value="' + key + '"]');
        if (el && stats[key] !== undefined) el.textContent = stats[key];
      }
      const disk = $('#cache-stats [data-value="disk_bytes"]');
      if (disk) disk.textContent = fmtBytes(stats.disk_bytes);
      drawBar(Number(stats.disk_bytes) || 0, Number(stats.cap_bytes) || 0);
    }

    drawBar(Number(bar.dataset.used) || 0, Number(bar.dataset.cap) || 0);

    function summary(result) {
      if (result === null || result === undefined) return "";
      if (typeof result !== "object") return String(result);
      return Object.entries(result)
        .filter(([, v]) => typeof v === "number")
        .map(([k, v]) => (STRINGS["result." + k] || k) + ": " + (k.includes("bytes") ? fmtBytes(v) : v))
        .join(" · ");
    }

    $$("[data-action]").forEach((btn) => {
      btn.addEventListener("click", async () => {
        if (btn.dataset.confirm && !window.confirm(t(btn.dataset.confirm))) return;
        const out = $("#op-result");
        $$("[data-action]").forEach((b) => { b.disabled = true; });
        setStatus(out, t("js.working"), "pending");
        try {
          const r = await api("POST", "/admin/api/cache/" + btn.dataset.action);
          setStatus(out, t("js.op_done", { action: btn.textContent.trim(), summary: summary(r.result) }), "ok");
          showStats(r.stats);
        } catch (e) {
          setStatus(out, t("js.op_failed", { message: e.message }), "error");
        } finally {
          $$("[data-action]").forEach((b) => { b.disabled = false; });
        }
      });
    });

    const saveBtn = $("#cap-save");
    if (saveBtn) {
      const input = $("#cap-mb");
      const saveCap = async () => {
        const status = $("#cap-status");
        try {
          await api("PUT", "/admin/api/settings", { values: { max_local_cache_mb: input.value } });
          setStatus(status, "✓ " + t("js.saved"), "ok");
          showStats(await api("GET", "/admin/api/cache"));
        } catch (e) {
          setStatus(status, t("js.save_failed", { message: e.message }), "error");
        }
      };
      saveBtn.addEventListener("click", saveCap);
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") saveCap(); });
    }
  }

  // -- images --------------------------------------------------------------------------------

  function initImages() {
    const PAGE = 24;
    const grid = $("#img-grid");
    const publicBase = (document.body.dataset.publicBase || window.location.origin).replace(/\/$/, "");
    let cursors = [null];
    let index = 0;
    let nextCursor = null;
    let items = [];
    let total = 0;
    const selected = new Set();
    let current = null;

    function summary() {
      $("#img-summary").textContent = t("js.images_total", { total, selected: selected.size });
      $("#img-select-all").checked = items.length > 0 && items.every((i) => selected.has(i.id));
    }

    function badge(kind) {
      const b = document.createElement("span");
      b.className = "badge " + kind;
      b.textContent = t("badge." + kind);
      return b;
    }

    function tile(item) {
      const el = document.createElement("div");
      el.className = "tile" + (selected.has(item.id) ? " selected" : "");
      el.dataset.id = item.id;
      const pick = document.createElement("input");
      pick.type = "checkbox";
      pick.className = "pick";
      pick.checked = selected.has(item.id);
      pick.addEventListener("change", () => {
        if (pick.checked) selected.add(item.id); else selected.delete(item.id);
        el.classList.toggle("selected", pick.checked);
        summary();
      });
      const thumb = document.createElement("button");
      thumb.type = "button";
      thumb.className = "thumb";
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = item.short_id;
      // the public variant of the image: made once, cached beside it, removed with it
      img.src = item.path + "?w=384&h=384&format=webp";
      img.addEventListener("error", () => { img.remove(); });
      thumb.appendChild(img);
      thumb.addEventListener("click", () => openLightbox(item));
      const meta = document.createElement("div");
      meta.className = "meta";
      const id = document.createElement("div");
      id.className = "mono";
      id.textContent = item.short_id;
      const info = document.createElement("div");
      info.className = "muted";
      info.textContent = fmtBytes(item.size) + " · " + fmtTime(item.created_at);
      const prompt = document.createElement("div");
      prompt.className = "prompt";
      prompt.textContent = item.prompt || t("js.no_prompt");
      prompt.title = item.prompt || "";
      const badges = document.createElement("div");
      badges.className = "badges";
      if (item.local) badges.appendChild(badge("local"));
      if (item.r2) badges.appendChild(badge("r2"));
      if (item.r2_state === "pending") badges.appendChild(badge("pending"));
      if (item.r2_state === "failed") badges.appendChild(badge("failed"));
      if (!item.local && !item.r2) badges.appendChild(badge("expired"));
      // untrusted text from forwarded headers: textContent only, never markup
      const who = document.createElement("div");
      who.className = "muted who";
      who.textContent = [item.user_name || item.user_id, item.model].filter(Boolean).join(" · ");
      who.title = [item.user_id, item.chat_id, item.message_id].filter(Boolean).join(" / ");
      meta.append(id, info, who, prompt, badges);
      el.append(pick, thumb, meta);
      return el;
    }

    async function load() {
      const params = new URLSearchParams({ sort: $("#img-sort").value, limit: String(PAGE) });
      if (cursors[index]) params.set("cursor", cursors[index]);
      document.querySelectorAll("[data-filter]").forEach((input) => {
        const value = input.value.trim();
        if (value) params.set(input.dataset.filter, value);
      });
      try {
        const page = await api("GET", "/admin/api/images?" + params.toString());
        items = page.items;
        total = page.total;
        nextCursor = page.next_cursor;
        grid.replaceChildren(...items.map(tile));
        $("#img-empty").hidden = items.length > 0;
        $("#img-prev").disabled = index === 0;
        $("#img-next").disabled = !nextCursor;
        $("#img-page").textContent = t("js.page", { page: index + 1 });
        summary();
      } catch (e) {
        toast(t("js.request_failed", { message: e.message }), true);
      }
    }

    function restart() { cursors = [null]; index = 0; selected.clear(); load(); }

    async function remove(ids, mode) {
      if (ids.length === 0) { toast(t("js.nothing_selected"), true); return false; }
      if (!window.confirm(t("js.confirm_delete_" + mode, { n: ids.length }))) return false;
      try {
        let r;
        try {
          r = await api("POST", "/admin/api/images/delete", { ids, mode });
        } catch (e) {
          // the only copy of images not yet in R2: a second, explicit confirmation
          if (e.code !== "only_local_copy") throw e;
          if (!window.confirm(t("js.confirm_delete_only_copy", { message: e.message }))) return false;
          r = await api("POST", "/admin/api/images/delete", { ids, mode, force: true });
        }
        if (r.result && r.result.failed) toast(t("js.delete_failed", { n: r.result.failed }), true);
        else toast(t("js.deleted_" + mode, { n: ids.length }));
        ids.forEach((id) => selected.delete(id));
        await load();
        return true;
      } catch (e) {
        toast(t("js.request_failed", { message: e.message }), true);
        return false;
      }
    }

    function openLightbox(item) {
      current = item;
      const url = publicBase + item.path;
      $("#lb-img").src = item.path;
      $("#lb-img").alt = item.short_id;
      $("#lb-id").textContent = item.id;
      const dims = item.width ? item.width + "×" + item.height + " · " : "";
      $("#lb-meta").textContent = dims + fmtBytes(item.size) + " · " + fmtTime(item.created_at);
      $("#lb-prompt").textContent = item.prompt || t("js.no_prompt");
      $("#lb-url").value = url;
      $("#lightbox").hidden = false;
    }

    function closeLightbox() { $("#lightbox").hidden = true; $("#lb-img").removeAttribute("src"); current = null; }

    $("#img-refresh").addEventListener("click", load);
    $("#img-sort").addEventListener("change", restart);
    document.querySelectorAll("[data-filter]").forEach((input) => {
      input.addEventListener("change", restart);  // Enter or leaving the field, not every key
    });
    $("#img-select-all").addEventListener("change", (e) => {
      for (const item of items) { if (e.target.checked) selected.add(item.id); else selected.delete(item.id); }
      grid.replaceChildren(...items.map(tile));
      summary();
    });
    $("#img-prev").addEventListener("click", () => { if (index > 0) { index--; load(); } });
    $("#img-next").addEventListener("click", () => {
      if (!nextCursor) return;
      cursors = cursors.slice(0, index + 1);
      cursors.push(nextCursor);
      index++;
      load();
    });
    $$("[data-delete]").forEach((btn) => {
      btn.addEventListener("click", () => remove(Array.from(selected), btn.dataset.delete));
    });
    $("#lb-close").addEventListener("click", closeLightbox);
    $("#lightbox").addEventListener("click", (e) => { if (e.target.id === "lightbox") closeLightbox(); });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeLightbox(); });
    $("#lb-copy").addEventListener("click", () => { $("#lb-url").select(); copyText($("#lb-url").value); });
    $("#lb-delete").addEventListener("click", async () => {
      if (current && await remove([current.id], "all")) closeLightbox();
    });
    load();
  }

  // -- logs ----------------------------------------------------------------------------------

  function initLogs() {
    const body = $("#log-body");
    let timer = null;

    async function load() {
      const level = $("#log-level").value;
      try {
        const r = await api("GET", "/admin/api/logs" + (level ? "?level=" + level : ""));
        body.replaceChildren(...r.entries.map((e) => {
          const tr = document.createElement("tr");
          tr.className = "log-row";
          const time = document.createElement("td");
          time.textContent = fmtTime(e.time);
          const lvl = document.createElement("td");
          const span = document.createElement("span");
          span.className = "level level-" + e.level;
          span.textContent = e.level;
          lvl.appendChild(span);
          const msg = document.createElement("td");
          msg.className = "msg";
          msg.textContent = e.message;
          tr.append(time, lvl, msg);
          return tr;
        }));
        $("#log-empty").hidden = r.entries.length > 0;
      } catch (e) {
        toast(t("js.request_failed", { message: e.message }), true);
      }
    }

    $("#log-refresh").addEventListener("click", load);
    $("#log-level").addEventListener("change", load);
    $("#log-clear").addEventListener("click", async () => {
      if (!window.confirm(t("js.confirm_clear_logs"))) return;
      try {
        await api("POST", "/admin/api/logs/clear");
        toast(t("js.logs_cleared"));
        await load();
      } catch (e) {
        toast(t("js.request_failed", { message: e.message }), true);
      }
    });
    $("#log-auto").addEventListener("change", (e) => {
      clearInterval(timer);
      if (e.target.checked) timer = setInterval(load, 5000);
    });
    load();
  }

  // -- gateway keys --------------------------------------------------------------------------

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function initKeys() {
    async function load() {
      try {
        const r = await api("GET", "/admin/api/keys");
        $("#keys-body").replaceChildren(...r.keys.map((k) => {
          const tr = document.createElement("tr");
          tr.className = "gwkey-row";
          tr.dataset.name = k.name;
          const limit = k.daily_images ? "/" + k.daily_images : "";
          const name = cell(k.name + (k.revoked ? " (" + t("js.keys_revoked") + ")" : ""));
          const actions = document.createElement("td");
          if (!k.revoked) {
            const btn = document.createElement("button");
            btn.type = "button";
            btn.className = "danger key-revoke";
            btn.textContent = t("js.keys_revoke");
            btn.addEventListener("click", async () => {
              if (!window.confirm(t("js.keys_confirm_revoke", { name: k.name }))) return;
              try {
                await api("POST", "/admin/api/keys/" + encodeURIComponent(k.name) + "/revoke");
                await load();
              } catch (e) {
                toast(t("js.request_failed", { message: e.message }), true);
              }
            });
            actions.appendChild(btn);
          }
          tr.append(
            name,
            cell(k.prefix + "..."),
            cell(fmtTime(k.created_at)),
            cell(k.last_used_at ? fmtTime(k.last_used_at) : "-"),
            cell(k.requests_today + " / " + k.images_today + limit),
            cell(k.requests_total + " / " + k.images_total),
            actions,
          );
          return tr;
        }));
        $("#keys-empty").hidden = r.keys.length > 0;
      } catch (e) {
        toast(t("js.request_failed", { message: e.message }), true);
      }
    }

    $("#key-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const limit = $("#key-limit").value;
      const body = { name: $("#key-name").value };
      if (limit) body.daily_images = Number(limit);
      try {
        const r = await api("POST", "/admin/api/keys", body);
        $("#key-value").value = r.key;
        $("#key-new").hidden = false;
        $("#key-name").value = "";
        $("#key-limit").value = "";
        await load();
      } catch (err) {
        toast(t("js.request_failed", { message: err.message }), true);
      }
    });
    load();
  }

  // -- models --------------------------------------------------------------------------------

  function initModels() {
    function origin(entry) {
      if (entry.shadowed) return t("js.models_shadowed");
      return entry.origin === "file" ? t("js.models_from_file") : t("js.models_from_console");
    }

    function button(label, cls, onClick) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = cls;
      btn.textContent = label;
      btn.addEventListener("click", onClick);
      return btn;
    }

    async function remove(kind, name) {
      if (!window.confirm(t("js.models_confirm_delete", { name }))) return;
      try {
        await api("DELETE", "/admin/api/" + kind + "/" + encodeURIComponent(name));
        await load();
      } catch (e) {
        toast(t("js.request_failed", { message: e.message }), true);
      }
    }

    async function load() {
      const r = await api("GET", "/admin/api/models");
      $("#models-source").textContent = r.source
        ? t("js.models_source", { path: r.source })
        : t(r.models.length ? "js.models_console_only" : "js.models_none", { name: r.gateway_model || "" });
      $("#model-upstream").replaceChildren(...r.upstreams.filter((u) => !u.shadowed).map((u) => {
        const opt = document.createElement("option");
        opt.value = u.name;
        opt.textContent = u.name;
        return opt;
      }));
      $("#upstreams-body").replaceChildren(...r.upstreams.map((u) => {
        const tr = document.createElement("tr");
        tr.className = "upstream-row";
        tr.dataset.name = u.name;
        tr.dataset.origin = u.origin;
        const result = cell("");
        result.className = "upstream-result";
        const actions = document.createElement("td");
        const test = button(t("js.models_test"), "upstream-test", async () => {
          test.disabled = true;
          result.textContent = "…";
          try {
            const res = await api("POST", "/admin/api/upstreams/" + encodeURIComponent(u.name) + "/test");
            result.textContent = res.ok
              ? t("js.models_test_ok", { ms: res.latency_ms, count: res.models })
              : t("js.models_test_failed", { status: res.status, detail: res.detail });
          } catch (e) {
            result.textContent = e.message;
          } finally {
            test.disabled = false;
          }
        });
        actions.appendChild(test);
        if (u.origin === "console") {
          actions.appendChild(button(t("js.models_edit"), "upstream-edit", () => {
            $("#upstream-name").value = u.name;
            $("#upstream-base").value = u.base_url;
            $("#upstream-key").value = "";
          }));
          actions.appendChild(button(t("js.models_delete"), "danger upstream-delete", () => remove("upstreams", u.name)));
        }
        tr.append(cell(u.name), cell(u.base_url), cell(u.has_key ? u.key : "-"), cell(origin(u)), actions, result);
        return tr;
      }));
      $("#models-body").replaceChildren(...r.models.map((m) => {
        const tr = document.createElement("tr");
        tr.className = "model-row";
        tr.dataset.name = m.name;
        tr.dataset.origin = m.origin;
        const actions = document.createElement("td");
        if (m.origin === "console") {
          actions.appendChild(button(t("js.models_edit"), "model-edit", () => {
            $("#model-name").value = m.name;
            $("#model-upstream").value = m.upstream;
            $("#model-target").value = m.upstream_model === m.name ? "" : m.upstream_model;
            $("#model-api").value = m.api;
            $("#model-params").value = Object.keys(m.params).length ? JSON.stringify(m.params) : "";
          }));
          actions.appendChild(button(t("js.models_delete"), "danger model-delete", () => remove("models", m.name)));
        }
        tr.append(cell(m.name), cell(m.upstream), cell(m.upstream_model), cell(m.api), cell(JSON.stringify(m.params)), cell(origin(m)), actions);
        return tr;
      }));
    }

    $("#upstream-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = $("#upstream-name").value.trim();
      const body = { base_url: $("#upstream-base").value.trim() };
      const key = $("#upstream-key").value;
      if (key) body.api_key = key;  // empty: the stored key stays (never sent to the page)
      try {
        await api("PUT", "/admin/api/upstreams/" + encodeURIComponent(name), body);
        toast(t("js.models_saved", { name }));
        $("#upstream-form").reset();
        await load();
      } catch (err) {
        toast(t("js.request_failed", { message: err.message }), true);
      }
    });

    $("#model-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = $("#model-name").value.trim();
      const body = { upstream: $("#model-upstream").value, api: $("#model-api").value };
      const target = $("#model-target").value.trim();
      if (target) body.upstream_model = target;
      const params = $("#model-params").value.trim();
      if (params) {
        try {
          body.params = JSON.parse(params);
        } catch (err) {
          toast(t("js.models_bad_params"), true);
          return;
        }
      }
      try {
        await api("PUT", "/admin/api/models/" + encodeURIComponent(name), body);
        toast(t("js.models_saved", { name }));
        $("#model-form").reset();
        await load();
      } catch (err) {
        toast(t("js.request_failed", { message: err.message }), true);
      }
    });
    load().catch((e) => toast(t("js.request_failed", { message: e.message }), true));
  }

  const PAGES = { dashboard: initDashboard, settings: initSettings, cache: initCache, images: initImages, logs: initLogs, keys: initKeys, models: initModels };
  document.addEventListener("DOMContentLoaded", () => {
    bindCommon();
    const init = PAGES[document.body.dataset.page];
    if (init) init();
  });
})();
