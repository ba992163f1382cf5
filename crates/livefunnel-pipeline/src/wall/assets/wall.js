// The wall: one page of rooms at a time, pushed by the server at most once a second.
// Pages turn by themselves every `page_seconds`; `?page=N` holds one page.
"use strict";

(() => {
  const { settings, L, el, int, money, pct, num, arrow, sparkline, alertText } = LF;
  const params = new URLSearchParams(location.search);
  const held = params.has("page");
  let page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  let pages = 1;
  let es = null;
  let rendered = false;
  const grid = document.getElementById("grid");
  document.getElementById("title").textContent = L.title;
  document.title = "livefunnel · " + L.title;

  function tile(r) {
    const a = el("a", "tile" + (r.alerts.length ? " alert" : "") + (r.live ? "" : " ended"));
    a.href = "/rooms/" + encodeURIComponent(r.room_id);
    a.dataset.roomId = r.room_id;
    a.dataset.alert = r.alerts.length ? "1" : "0";
    const head = el("div", "head");
    head.append(el("span", "name", r.name || r.room_id));
    if (r.alerts.length) {
      head.append(el("span", "badge", r.alerts.map(alertText).join(" · ")));
    } else if (!r.live) {
      head.append(el("span", "badge quiet", L.not_live));
    } else {
      head.append(el("span", "platform", LF.platform(r.platform)));
    }
    const sub = el("div", "sub", [r.anchor, r.brand, r.name ? r.room_id : ""].filter(Boolean).join(" · "));
    const gmv = el("div", "gmv");
    gmv.append(el("span", "label", L.gmv), el("span", "value", money(r.gmv_cents)));
    // Pacing against the session's target: a thin bar under the GMV.
    const bar = el("div", "pace");
    if (r.pacing != null) {
      gmv.append(el("span", "pace-pct", L.target + " " + pct(r.pacing, 0)));
      const fill = el("div", "fill" + (r.pacing >= 1 ? " done" : ""));
      fill.style.width = Math.min(100, r.pacing * 100).toFixed(1) + "%";
      bar.append(fill);
    } else {
      bar.classList.add("none");
    }
    const kpis = el("div", "kpis3");
    const kpi = (label, value, trend) => {
      const k = el("div", "kpi");
      const v = el("span", "value", value);
      if (trend) v.append(arrow(trend));
      k.append(el("span", "label", label), v);
      return k;
    };
    kpis.append(
      kpi(L.online, int(r.online), r.online_trend),
      kpi(L.gpm, num(r.gpm), r.gpm != null ? r.gpm_trend : null),
      kpi(L.watch_to_pay, pct(r.watch_to_pay)),
    );
    a.append(head, sub, gmv, bar, kpis, sparkline(LF.pad(r.spark, 60), 300, 36));
    return a;
  }

  function render(d) {
    pages = d.pages;
    page = d.page;
    const s = d.summary;
    document.getElementById("summary").textContent =
      s.rooms + " " + L.rooms + " · " + s.live + " " + L.live + " · " + s.in_alert + " " + L.in_alert +
      " · " + L.online + " " + int(s.online) + " · " + L.gmv + " " + money(s.gmv_cents);
    document.getElementById("pager").textContent = pages > 1 ? L.page + " " + page + "/" + pages : "";
    const notice = document.getElementById("notice");
    notice.hidden = !d.directory_error;
    notice.textContent = d.directory_error ? L.directory_error + d.directory_error : "";
    const tiles = d.rooms.map(tile);
    if (!tiles.length) tiles.push(el("div", "empty", L.no_rooms));
    grid.replaceChildren(...tiles);
    document.body.dataset.seq = d.seq;
    // The data on screen, for scripts and the end-to-end test.
    window.lfLast = d;
    document.body.dataset.page = d.page;
    document.body.dataset.pages = d.pages;
    if (!rendered) {
      rendered = true;
      // Read by the end-to-end test: milliseconds from navigation to the first rooms shown.
      window.lfFirstRender = performance.now();
    }
  }

  function open() {
    if (es) es.close();
    es = LF.stream("/api/stream?page=" + page + "&per_page=" + settings.page_size, { page: render });
  }

  open();
  LF.tick();
  setInterval(LF.tick, 1000);
  if (!held && settings.page_seconds > 0) {
    setInterval(() => {
      if (pages > 1) {
        page = (page % pages) + 1;
        open();
      }
    }, settings.page_seconds * 1000);
  }
})();
