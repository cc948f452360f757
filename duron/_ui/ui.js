// duron ui: refresh the part of a page marked data-live while its job runs.
// Everything else works without this script; it only saves the reload.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.live) return;
  const period = 1000;
  let stopped = false;

  async function refresh() {
    if (stopped) return;
    try {
      const response = await fetch(live.dataset.live, { cache: "no-store" });
      if (response.ok) {
        const open = new Set(
          Array.from(live.querySelectorAll("details[open][data-key]"), (d) => d.dataset.key)
        );
        const closed = new Set(
          Array.from(live.querySelectorAll("details:not([open])[data-key]"), (d) => d.dataset.key)
        );
        live.innerHTML = await response.text();
        for (const d of live.querySelectorAll("details[data-key]")) {
          if (open.has(d.dataset.key)) d.open = true;
          else if (closed.has(d.dataset.key)) d.open = false;
        }
        live.dataset.refreshed = String(Number(live.dataset.refreshed || 0) + 1);
        // A job page stops refreshing once its job has ended.
        const status = live.querySelector("#job-status .status");
        if (status && /^(completed|failed|cancelled|empty|damaged)$/.test(status.textContent)) {
          stopped = true;
          return;
        }
      }
    } catch (err) {
      // The server went away for a moment: try again at the next tick.
    }
    setTimeout(refresh, period);
  }
  setTimeout(refresh, period);
})();
