// fedledger explorer: per-round audits and live updates. Small, ours, no library.
"use strict";
(function () {
  const verdicts = new Map(); // round -> the server's audit answer

  function chip(name, ok, detail) {
    const span = document.createElement("span");
    span.className = "check " + (ok ? "ok" : "fail");
    span.textContent = name;
    if (detail) span.title = detail;
    return span;
  }

  function render(round) {
    const result = verdicts.get(round);
    if (!result) return;
    const failed = result.error !== undefined || !result.ok;
    const row = document.getElementById("round-" + round);
    if (row) {
      row.classList.remove("audit-ok", "audit-fail");
      row.classList.add(failed ? "audit-fail" : "audit-ok");
    }
    document.querySelectorAll('.verdict[data-round="' + round + '"]').forEach(function (box) {
      box.querySelectorAll(".checks, .failures").forEach(function (old) { old.remove(); });
      const checks = document.createElement("span");
      checks.className = "checks";
      const failures = document.createElement("div");
      failures.className = "failures";
      const summary = document.createElement("span");
      summary.className = "summary " + (failed ? "fail" : "ok");
      summary.textContent = failed ? "FAILED" : "verified";
      checks.appendChild(summary);
      if (result.error !== undefined) {
        checks.appendChild(chip("audit failed", false, result.error));
        failures.textContent = result.error;
      } else {
        result.checks.forEach(function (c) { checks.appendChild(chip(c.name, c.ok, c.detail)); });
        result.failures.forEach(function (line) {
          const p = document.createElement("div");
          p.textContent = line;
          failures.appendChild(p);
        });
      }
      box.appendChild(checks);
      if (failures.childNodes.length) box.appendChild(failures);
    });
    document.querySelectorAll('button.audit[data-round="' + round + '"]').forEach(function (b) {
      b.disabled = false;
      b.textContent = "audit again";
    });
  }

  async function audit(round) {
    document.querySelectorAll('button.audit[data-round="' + round + '"]').forEach(function (b) {
      b.disabled = true;
      b.textContent = "auditing…";
    });
    let result;
    try {
      const response = await fetch("/api/rounds/" + round + "/audit", { method: "POST" });
      result = await response.json();
    } catch (err) {
      result = { round: round, error: String(err) };
    }
    verdicts.set(round, result);
    render(round);
  }

  async function auditAll(button) {
    button.disabled = true;
    const buttons = document.querySelectorAll("tr.round button.audit");
    const rounds = Array.from(buttons).map(function (b) { return Number(b.dataset.round); });
    for (const round of rounds) {
      await audit(round);
    }
    button.disabled = false;
    document.body.dataset.audited = "all";
  }

  document.addEventListener("click", function (event) {
    const one = event.target.closest("button.audit");
    if (one) {
      audit(Number(one.dataset.round));
      return;
    }
    const all = event.target.closest("button.audit-all");
    if (all) auditAll(all);
  });

  // Live updates: ask for the data's version; when it changed, fetch this page again and swap
  // its content in (the audits shown stay).
  const period = Number(document.body.dataset.pollMs) || 2000;

  async function refresh() {
    const response = await fetch(location.href, { cache: "no-store" });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("content");
    const live = doc.getElementById("live");
    if (!fresh) return;
    const main = document.getElementById("content");
    const scroll = window.scrollY;
    main.replaceWith(fresh);
    if (live) document.getElementById("live").replaceWith(live);
    verdicts.forEach(function (_, round) { render(round); });
    window.scrollTo(0, scroll);
  }

  async function poll() {
    try {
      const response = await fetch("/api/version", { cache: "no-store" });
      if (response.ok) {
        const answer = await response.json();
        const main = document.getElementById("content");
        if (main && answer.version !== undefined && answer.version !== main.dataset.version) {
          await refresh();
        }
        document.getElementById("live").classList.remove("offline");
      }
    } catch (err) {
      const live = document.getElementById("live");
      if (live) live.classList.add("offline");
    }
    window.setTimeout(poll, period);
  }

  window.setTimeout(poll, period);
})();
