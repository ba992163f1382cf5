// One room: its tile's numbers large, the funnel and traffic split of the longest
// running window, its session so far, its alerts. Pushed at most once a second.
"use strict";

(() => {
  const { L, el, int, money, pct, num, arrow, sparkline, alertText, age } = LF;
  const roomId = decodeURIComponent(location.pathname.replace(/^\/rooms\//, ""));
  document.getElementById("back").textContent = L.back;
  document.getElementById("funnel-title").textContent = L.funnel;
  document.getElementById("sources-title").textContent = L.sources;
  document.getElementById("charts-title").textContent = L.charts;
  document.getElementById("products-title").textContent = L.products;
  document.getElementById("detectors-title").textContent = L.detectors;

  function field(name, text) {
    const s = el("span", "n", text);
    s.dataset.field = name;
    return s;
  }

  function kpis(r) {
    const box = document.getElementById("kpis");
    const k = (label, value, trend, extra) => {
      const d = el("div", "kpi big");
      const v = el("span", "value", value);
      if (trend) v.append(arrow(trend));
      d.append(el("span", "label", label), v);
      if (extra) d.append(extra);
      return d;
    };
    let pace = null;
    if (r.pacing != null) {
      pace = el("div", "pace");
      const fill = el("div", "fill" + (r.pacing >= 1 ? " done" : ""));
      fill.style.width = Math.min(100, r.pacing * 100).toFixed(1) + "%";
      pace.append(fill, el("span", "pace-text", L.target + " " + money(r.gmv_target_cents) + " · " + pct(r.pacing, 0)));
    }
    box.replaceChildren(
      k(L.online, int(r.online), r.online_trend, sparkline(LF.pad(r.spark, 60), 300, 40)),
      k(L.gmv, money(r.gmv_cents), null, pace),
      k(L.gpm + " (" + r.window + ")", num(r.gpm), r.gpm_trend),
      k(L.watch_to_pay + " (" + r.window + ")", pct(r.watch_to_pay)),
    );
  }

  function funnel(f) {
    const box = document.getElementById("funnel");
    if (!f) return box.replaceChildren(el("div", "muted", "–"));
    document.getElementById("funnel-title").textContent = L.funnel + " · " + L.window_last(f.window);
    const steps = [
      ["room_impressions", L.impressions, f.room_impressions],
      ["watch_pv", L.entries, f.watch_pv],
      ["product_clicks", L.clicks, f.product_clicks],
      ["orders_paid", L.orders, f.orders_paid],
    ];
    const top = Math.max(1, ...steps.map((s) => s[2]));
    const rows = steps.map(([key, label, n], i) => {
      const row = el("div", "step");
      const bar = el("div", "bar");
      bar.style.width = Math.max(2, (n / top) * 100).toFixed(1) + "%";
      const conv = i === 0 || !steps[i - 1][2] ? "" : pct(n / steps[i - 1][2]);
      row.append(el("span", "label", label), bar, field("funnel." + key, int(n)), el("span", "conv", conv));
      return row;
    });
    box.replaceChildren(...rows);
  }

  function sources(s) {
    const box = document.getElementById("sources");
    if (!s) return box.replaceChildren(el("div", "muted", "–"));
    const total = Math.max(1, s.watch_uv_private + s.watch_uv_public + s.watch_uv_paid);
    const rows = [
      ["private", L.private, s.watch_uv_private, s.gmv_cents_private],
      ["public", L.public, s.watch_uv_public, s.gmv_cents_public],
      ["paid", L.paid, s.watch_uv_paid, s.gmv_cents_paid],
    ].map(([key, label, uv, gmv]) => {
      const row = el("div", "step " + key);
      const bar = el("div", "bar");
      bar.style.width = Math.max(2, (uv / total) * 100).toFixed(1) + "%";
      row.append(el("span", "label", label), bar, field("sources." + key, int(uv)), el("span", "conv", money(gmv)));
      return row;
    });
    const lev = el("div", "leverage");
    lev.append(el("span", "label", L.leverage), field("sources.public_private_ratio", num(s.public_private_ratio, 2)));
    box.replaceChildren(...rows, lev);
  }

  function charts(history) {
    const box = document.getElementById("charts");
    const chart = (label, key, fmt) => {
      const d = el("div", "chart");
      const values = history.map((h) => h[key]);
      const last = values.length ? values[values.length - 1] : null;
      d.append(el("span", "label", label + " " + fmt(last)), sparkline(values, 600, 90, "line"));
      return d;
    };
    const span = history.length ? age(history[history.length - 1].age_s) : "";
    box.replaceChildren(
      chart(L.gpm, "gpm", (v) => num(v)),
      chart(L.online, "online", int),
      chart(L.watch_to_pay, "watch_to_pay", (v) => pct(v)),
      el("div", "muted", L.session + " " + span),
    );
  }

  // The products selling most this session, by GMV; bars against the first.
  function products(list) {
    const box = document.getElementById("products");
    if (!list || !list.length) return box.replaceChildren(el("div", "muted", L.products_pending));
    const top = Math.max(1, list[0].gmv_cents);
    const rows = list.map((p, i) => {
      const d = el("div", "step product");
      const bar = el("div", "bar");
      bar.style.width = Math.max(2, (Math.max(0, p.gmv_cents) / top) * 100).toFixed(1) + "%";
      const name = p.product_id === "__other__" ? L.other_products : p.product_id;
      const n = field("products." + i + ".gmv_cents", money(p.gmv_cents));
      const extra = int(p.orders_paid) + " " + L.orders_short + " · " + int(p.product_clicks) + " " + L.clicks_short;
      d.append(el("span", "label", name), bar, n, el("span", "conv", extra));
      d.dataset.product = p.product_id;
      return d;
    });
    box.replaceChildren(...rows);
  }

  // The detectors' evidence against the thresholds the rules use, and what the
  // room's volume allows for GPM drops.
  function detectors(x) {
    const box = document.getElementById("detectors");
    if (!x) return box.replaceChildren(el("div", "muted", L.detectors_off));
    const row = (key, rule, e, t) => {
      const d = el("div", "step");
      const bar = el("div", "bar" + (e != null && e >= t ? " over" : ""));
      bar.style.width = (e == null ? 0 : Math.max(2, Math.min(100, (e / t) * 100))).toFixed(1) + "%";
      bar.style.visibility = e == null ? "hidden" : "";
      const value = e == null ? L.not_armed : num(e, 1) + " / " + num(t, 1);
      d.append(el("span", "label", L.rules[rule]), bar, field("detectors." + key, value));
      return d;
    };
    const horizon = x.gpm_drop_horizon_s == null
      ? L.gpm_unmonitored
      : L.gpm_horizon(Math.max(1, Math.round(x.gpm_drop_horizon_s / 60)));
    const h = el("div", "muted", horizon + " · " + L.expected_orders + " " + num(x.orders_expected_per_minute, 1));
    h.dataset.field = "detectors.gpm_horizon";
    box.replaceChildren(
      row("gpm_drop", "GPMDrop", x.gpm_drop_evidence, x.gpm_drop_threshold),
      row("sales_stall", "SalesStall", x.sales_stall_evidence, x.sales_stall_threshold),
      row("online_cliff", "OnlineViewersCliff", x.online_cliff_evidence, x.online_cliff_threshold),
      h,
    );
  }

  function render(d) {
    const r = d.room;
    document.title = "livefunnel · " + (r.name || r.room_id);
    document.getElementById("title").textContent = r.name || r.room_id;
    document.getElementById("subtitle").textContent = [
      r.room_id, r.org_id, LF.platform(r.platform), r.anchor, r.brand, r.account,
      r.live ? L.live + " " + age(r.session_age_s) : L.not_live,
      d.last_event_received_s ? L.last_event + " " + LF.clock(d.last_event_received_s * 1000) : "",
    ].filter(Boolean).join(" · ");
    document.body.classList.toggle("alert", r.alerts.length > 0);
    kpis(r);
    funnel(d.funnel);
    sources(d.sources);
    charts(d.history);
    products(d.top_products);
    detectors(d.detectors);
    const alerts = document.getElementById("alerts");
    alerts.replaceChildren(
      ...(r.alerts.length ? r.alerts.map((a) => el("div", "badge", alertText(a))) : [el("div", "muted", L.no_alert)]),
    );
    document.getElementById("notice").hidden = true;
    document.body.dataset.seq = d.seq;
    // The data on screen, for scripts and the end-to-end test.
    window.lfLast = d;
    if (window.lfFirstRender == null) window.lfFirstRender = performance.now();
  }

  function gone() {
    const n = document.getElementById("notice");
    n.textContent = L.gone;
    n.hidden = false;
  }

  LF.stream("/api/stream?room=" + encodeURIComponent(roomId), { room: render, gone });
  LF.tick();
  setInterval(LF.tick, 1000);
})();
