// livefunnel wall: labels, number and time formats, small SVG charts. No library, no
// network access but this server's own API (the pages' Content-Security-Policy says so).
"use strict";

const LF = (() => {
  const settings = JSON.parse(document.getElementById("settings").textContent);
  const zh = settings.lang !== "en";

  const LABELS = {
    zh: {
      title: "直播大屏", rooms: "直播间", live: "直播中", in_alert: "告警", online: "在线", gmv: "GMV",
      gpm: "GPM", watch_to_pay: "观看-成交", page: "页", target: "目标", not_live: "未开播",
      connecting: "连接中…", disconnected: "连接中断，重连中…", no_rooms: "暂无直播间",
      directory_error: "房间目录未更新：", back: "← 返回大屏", session: "开播",
      funnel: "转化漏斗", impressions: "曝光", entries: "进房", clicks: "商品点击", orders: "成交订单",
      sources: "流量来源", private: "私域", public: "公域", paid: "付费", leverage: "公域撬动比",
      viewers: "观看人数", charts: "本场走势", products: "热销商品", detectors: "告警与依据",
      products_pending: "本场还没有商品数据（来自 1m 窗口的商品明细）。", other_products: "其他商品", orders_short: "单", clicks_short: "次点击",
      detectors_off: "告警检测未开启（[detectors]）。", evidence: "依据", threshold: "阈值", not_armed: "未启用",
      gpm_horizon: (m) => "GPM 下跌 50% 约 " + m + " 分钟可报警", gpm_unmonitored: "单量过小，不单独监测 GPM 下跌（见组织级告警）",
      expected_orders: "预期成交/分钟",
      no_alert: "无告警", gone: "该直播间已下播或不在您的权限内。", last_event: "最后事件",
      totals: "累计", refunds: "退款", comments: "评论", uv: "人", minutes: "分钟",
      window_last: (w) => "最近 " + w,
      rules: {
        GPMDrop: "GPM 下跌", OnlineViewersCliff: "人数骤减", SalesStall: "成交停滞", RoomSilent: "无数据",
      },
    },
    en: {
      title: "Live wall", rooms: "rooms", live: "live", in_alert: "in alert", online: "Online", gmv: "GMV",
      gpm: "GPM", watch_to_pay: "Watch→pay", page: "page", target: "target", not_live: "not live",
      connecting: "connecting…", disconnected: "disconnected, reconnecting…", no_rooms: "No live rooms",
      directory_error: "Room directory not reloaded: ", back: "← back to the wall", session: "live for",
      funnel: "Funnel", impressions: "Impressions", entries: "Entries", clicks: "Product clicks", orders: "Orders",
      sources: "Traffic by source", private: "Private", public: "Public", paid: "Paid", leverage: "Public:private leverage",
      viewers: "viewers", charts: "This session", products: "Top products", detectors: "Alerts and evidence",
      products_pending: "No product data this session yet (from the 1m window's product breakdowns).", other_products: "other products", orders_short: "orders", clicks_short: "clicks",
      detectors_off: "The alert detectors are off ([detectors]).", evidence: "evidence", threshold: "threshold", not_armed: "not armed",
      gpm_horizon: (m) => "a 50 % GPM drop alerts in about " + m + " min", gpm_unmonitored: "too few orders: not monitored for GPM drops per room (see the org alerts)",
      expected_orders: "expected orders/min",
      no_alert: "No alert", gone: "This room is no longer live, or not yours to see.", last_event: "Last event",
      totals: "Totals", refunds: "Refunds", comments: "Comments", uv: "", minutes: "min",
      window_last: (w) => "last " + w,
      rules: {
        GPMDrop: "GPM drop", OnlineViewersCliff: "Viewer cliff", SalesStall: "Sales stall", RoomSilent: "Silent",
      },
    },
  };
  const L = zh ? LABELS.zh : LABELS.en;

  let tz = settings.tz;
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
  } catch (e) {
    tz = "UTC";
  }
  const locale = zh ? "zh-CN" : "en-US";
  const clockFmt = new Intl.DateTimeFormat(locale, {
    timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const intFmt = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });

  function int(n) {
    return n == null ? "–" : intFmt.format(n);
  }

  // Money in fen shown in yuan: ¥12.3万 / ¥1,234 (zh), ¥12.3k (en).
  function money(cents) {
    if (cents == null) return "–";
    const y = cents / 100;
    if (zh && Math.abs(y) >= 1e8) return "¥" + (y / 1e8).toFixed(2) + "亿";
    if (zh && Math.abs(y) >= 1e4) return "¥" + (y / 1e4).toFixed(1) + "万";
    if (!zh && Math.abs(y) >= 1e6) return "¥" + (y / 1e6).toFixed(2) + "M";
    if (!zh && Math.abs(y) >= 1e4) return "¥" + (y / 1e3).toFixed(1) + "k";
    return "¥" + intFmt.format(Math.round(y));
  }

  function pct(r, digits) {
    return r == null ? "–" : (r * 100).toFixed(digits == null ? 1 : digits) + "%";
  }

  function num(x, digits) {
    const d = digits == null ? 0 : digits;
    return x == null ? "–" : x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }

  function clock(ms) {
    return clockFmt.format(new Date(ms));
  }

  function age(s) {
    if (s == null) return "";
    const m = Math.floor(s / 60);
    return m >= 60 ? Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m" : m + (zh ? "分钟" : " min");
  }

  const ARROWS = { up: "▲", down: "▼", flat: "▶", none: "" };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function arrow(trend) {
    const a = el("span", "trend " + (trend ? trend.dir : "none"), trend ? ARROWS[trend.dir] : "");
    if (trend && trend.ratio != null) a.title = pct(trend.ratio, 0);
    return a;
  }

  const SVG = "http://www.w3.org/2000/svg";

  // A line over `values` (nulls carry the previous value), scaled to its own range.
  function sparkline(values, w, h, cls) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", cls || "spark");
    const pts = [];
    let last = null;
    for (const v of values) {
      if (v != null) last = v;
      pts.push(last);
    }
    const known = pts.filter((v) => v != null);
    if (known.length < 2) return svg;
    const lo = Math.min(...known), hi = Math.max(...known);
    const span = hi - lo || 1;
    const step = w / Math.max(1, pts.length - 1);
    let d = "";
    pts.forEach((v, i) => {
      if (v == null) return;
      const x = (i * step).toFixed(1);
      const y = (h - 2 - ((v - lo) / span) * (h - 4)).toFixed(1);
      d += (d ? "L" : "M") + x + " " + y;
    });
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.appendChild(path);
    return svg;
  }

  function alertText(a) {
    const name = L.rules[a.rule] || a.rule;
    // A detector's value is its evidence, which the room page shows against its threshold.
    if (a.value == null || a.rule !== "RoomSilent") return name;
    return name + " " + Math.round(a.value) + "s";
  }

  // An EventSource that says on screen whether it is connected.
  function stream(url, handlers) {
    const conn = document.getElementById("conn");
    conn.textContent = L.connecting;
    const es = new EventSource(url);
    es.onopen = () => { conn.textContent = ""; conn.className = "conn"; };
    es.onerror = () => { conn.textContent = L.disconnected; conn.className = "conn bad"; };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    return es;
  }

  const PLATFORMS = {
    zh: { wechat_channels: "视频号", douyin: "抖音", kuaishou: "快手", taobao: "淘宝", other: "其他" },
    en: { wechat_channels: "Channels", douyin: "Douyin", kuaishou: "Kuaishou", taobao: "Taobao", other: "other" },
  };

  function platform(p) {
    return (zh ? PLATFORMS.zh : PLATFORMS.en)[p] || p;
  }

  // `values` right-aligned in `n` slots (the sparkline's 30 minutes).
  function pad(values, n) {
    return values.length >= n ? values : new Array(n - values.length).fill(null).concat(values);
  }

  function tick() {
    document.getElementById("clock").textContent = clock(Date.now());
  }

  return { settings, L, zh, int, money, pct, num, clock, age, el, arrow, sparkline, alertText, stream, tick, platform, pad };
})();
