// The meshgate dashboard: a client of the public REST API and nothing else. No libraries, no
// build step. Every view refreshes every REFRESH_MS and updates what it drew in place, so the
// page does not flicker and the graph keeps its layout.
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "meshgate-token";
const view = document.getElementById("view");
const banner = document.getElementById("banner");
const live = document.getElementById("live");
const SVG_NS = "http://www.w3.org/2000/svg";

// ---- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let tokenAsked = null; // a promise while the token dialog is open

function askToken() {
  if (tokenAsked) return tokenAsked;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  tokenAsked = new Promise((resolve) => {
    document.getElementById("token-form").onsubmit = () => {
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = "";
      tokenAsked = null;
      resolve();
    };
  });
  if (!dialog.open) dialog.showModal();
  return tokenAsked;
}

async function api(path, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, Object.assign({}, options, { headers }));
    } catch (error) {
      throw new ApiError(0, `meshgate does not answer (${error.message})`);
    }
    if (response.status === 401) {
      await askToken();
      continue;
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const errors = (body && body.errors) || [];
      const message = errors.length
        ? errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join("; ")
        : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return body;
  }
  throw new ApiError(401, "a valid token is required");
}

// Which endpoints this server has (a single node has no nodes list, for one): asked once, so
// the page never probes for what is not there.
let paths = null;

async function hasPath(path) {
  if (paths === null) {
    const schema = await api("/openapi.json");
    paths = new Set(Object.keys(schema.paths || {}));
  }
  return paths.has(path);
}

const enc = encodeURIComponent;
const resourcePath = (kind, name, namespace) =>
  `/api/v1/${kind}/${enc(name)}?namespace=${enc(namespace || "default")}`;

function showError(error) {
  banner.textContent = error instanceof ApiError ? error.message : `Error: ${error.message}`;
  banner.hidden = false;
}

function clearError() {
  banner.hidden = true;
  banner.textContent = "";
}

// ---- small DOM helpers ------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

// Replace a container's rows only when their text changed: no flicker, inputs keep focus.
function setRows(tbody, rows) {
  const signature = JSON.stringify(rows.map((row) => row.map((cell) => cellText(cell))));
  if (tbody.dataset.signature === signature) return;
  tbody.dataset.signature = signature;
  tbody.replaceChildren(...rows.map((row) => el("tr", {}, row.map((cell) => toCell(cell)))));
}

function cellText(cell) {
  return cell instanceof Node ? cell.outerHTML || cell.textContent : String(cell ?? "");
}

function toCell(cell) {
  if (cell instanceof Node && cell.tagName === "TD") return cell;
  return el("td", {}, cell ?? "");
}

const num = (value) => el("td", { class: "num" }, value ?? "-");
const ms = (value) => (value === null || value === undefined ? "-" : `${value} ms`);
const pct = (value, digits = 1) =>
  value === null || value === undefined ? "-" : `${(100 * value).toFixed(digits)}%`;
const statusCell = (text) => el("span", { class: text }, text);

// ---- views ------------------------------------------------------------------------------

const views = {};
let current = null; // {name, refresh}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, ...rest] = hash.split("/");
  const viewName = name || "overview";
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", link.dataset.view === viewName);
  }
  view.replaceChildren();
  clearError();
  const make = views[viewName] || views.overview;
  current = make(rest.map(decodeURIComponent));
  tick();
}

async function tick() {
  const shown = current;
  if (!shown) return;
  try {
    await shown.refresh();
    if (shown === current) clearError();
    live.classList.remove("stale");
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (shown === current) showError(error);
    live.classList.add("stale");
  }
}

// ---- overview: the graph ----------------------------------------------------------------

// Callers (external, nodes, and services that only call) on the left, gateways in the middle,
// what they route to on the right.
const COLUMN = { external: 0, node: 0, gateway: 1, service: 2, address: 2 };
const NODE_W = 170;
const NODE_H = 34;
const ROW_H = 58;

function edgeClass(edge) {
  if (edge.anomaly) return "bad";
  if (!edge.rate && !edge.requests) return "idle";
  if (edge.error_ratio === null || edge.error_ratio === undefined) return "ok";
  if (edge.error_ratio >= 0.05) return "bad";
  if (edge.error_ratio >= 0.01) return "warn";
  return "ok";
}

function edgeLabel(edge) {
  const parts = edge.anomaly ? ["⚠ anomaly"] : [];
  if (edge.weight !== null && edge.weight !== undefined) parts.push(`${edge.weight}%`);
  parts.push(`${(edge.rate || 0).toFixed(1)}/s`);
  if (edge.error_ratio !== null && edge.error_ratio !== undefined) {
    parts.push(`err ${pct(edge.error_ratio)}`);
  }
  if (edge.p99_ms !== null && edge.p99_ms !== undefined) parts.push(`p99 ${edge.p99_ms}ms`);
  return parts.join(" · ");
}

views.overview = () => {
  const panel = el("div", { class: "panel" });
  const canvas = svg("svg", { class: "graph", viewBox: "0 0 960 200", role: "img" });
  canvas.setAttribute("aria-label", "dependency and traffic graph");
  const edgeLayer = svg("g");
  const labelLayer = svg("g");
  const nodeLayer = svg("g");
  canvas.append(edgeLayer, nodeLayer, labelLayer);
  const legend = el(
    "div",
    { class: "legend" },
    el("span", {}, el("i", { style: "background:var(--ok)" }), "errors < 1%"),
    el("span", {}, el("i", { style: "background:var(--warn)" }), "1-5%"),
    el("span", {}, el("i", { style: "background:var(--bad)" }), "≥ 5%"),
    el("span", {}, el("i", { style: "background:var(--idle)" }), "no traffic"),
    el("span", {}, "labels: weight · rate · error ratio · p99 (last 60 s)")
  );
  panel.append(canvas, legend);
  const empty = el("p", { class: "muted", hidden: true }, "No gateways yet: apply a manifest.");
  view.append(el("h1", {}, "Traffic graph"), empty, panel);

  // Positions are kept for the page's life: a node, once placed, never moves.
  const placed = new Map();
  const rows = [0, 0, 0];
  const drawnNodes = new Map();
  const drawnEdges = new Map();

  function place(node, callersOnly) {
    if (!placed.has(node.id)) {
      const column = callersOnly.has(node.id) ? 0 : COLUMN[node.kind] ?? 2;
      placed.set(node.id, { x: 10 + column * 390, y: 20 + rows[column] * ROW_H });
      rows[column] += 1;
    }
    return placed.get(node.id);
  }

  return {
    async refresh() {
      const graph = await api("/api/v1/graph");
      empty.hidden = graph.nodes.some((n) => n.kind === "gateway");
      // Services no route leads to (callers, or not yet called) sit with the callers.
      const targets = new Set(graph.edges.map((e) => e.target));
      const callersOnly = new Set(
        graph.nodes.filter((n) => n.kind === "service" && !targets.has(n.id)).map((n) => n.id)
      );
      const seen = new Set();
      for (const node of graph.nodes) {
        const at = place(node, callersOnly);
        seen.add(node.id);
        let group = drawnNodes.get(node.id);
        if (!group) {
          group = svg("g", { class: `node ${node.kind}`, "data-id": node.id });
          group.append(svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
          const label = svg("text", { x: 10, y: 21 });
          group.append(label);
          if (node.kind === "gateway") {
            group.addEventListener("click", () => {
              location.hash = `#/gateways/${enc(node.namespace)}/${enc(node.name)}`;
            });
          }
          nodeLayer.append(group);
          drawnNodes.set(node.id, group);
        }
        group.setAttribute("transform", `translate(${at.x},${at.y})`);
        group.classList.toggle("unresolved", Boolean(node.unresolved));
        const prefix = node.namespace !== "default" && node.kind !== "external" ? `${node.namespace}/` : "";
        const suffix = node.kind === "gateway" && node.port ? ` :${node.port}` : "";
        const text = `${prefix}${node.name}${suffix}`;
        const label = group.querySelector("text");
        const shown = text.length > 24 ? `${text.slice(0, 23)}…` : text;
        if (label.textContent !== shown) label.textContent = shown;
      }
      for (const [id, group] of drawnNodes) {
        if (!seen.has(id)) {
          group.remove();
          drawnNodes.delete(id);
        }
      }
      const wanted = new Set();
      for (const edge of graph.edges) {
        const id = `${edge.source}->${edge.target}#${edge.route ?? ""}`;
        wanted.add(id);
        const from = placed.get(edge.source);
        const to = placed.get(edge.target);
        if (!from || !to) continue;
        let drawn = drawnEdges.get(id);
        if (!drawn) {
          drawn = { path: svg("path", { "data-id": id }), label: svg("text", { class: "label" }) };
          drawn.path.setAttribute("data-route", edge.route ?? "");
          drawn.label.setAttribute("data-route", edge.route ?? "");
          edgeLayer.append(drawn.path);
          labelLayer.append(drawn.label);
          drawnEdges.set(id, drawn);
        }
        // A caller to the right of what it calls (a service that is also a route's target)
        // is joined from its left side to the gateway's right side.
        const backward = to.x < from.x;
        const x1 = backward ? from.x : from.x + NODE_W;
        const y1 = from.y + NODE_H / 2;
        const x2 = backward ? to.x + NODE_W : to.x;
        const y2 = to.y + NODE_H / 2;
        const bend = (x2 - x1) / 2;
        drawn.path.setAttribute("d", `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`);
        drawn.path.setAttribute("class", `edge ${edgeClass(edge)}`);
        drawn.label.classList.toggle("anomaly", Boolean(edge.anomaly));
        drawn.path.replaceChildren(svg("title"));
        drawn.path.firstChild.textContent = edge.anomaly || edgeLabel(edge);
        // Next to the target: edges into one node are labelled at distinct heights.
        drawn.label.setAttribute("x", String(backward ? x2 + 8 : x2 - 8));
        drawn.label.style.textAnchor = backward ? "start" : "";
        drawn.label.setAttribute("y", String(y2 - 7));
        const text = edgeLabel(edge);
        if (drawn.label.textContent !== text) drawn.label.textContent = text;
      }
      for (const [id, drawn] of drawnEdges) {
        if (!wanted.has(id)) {
          drawn.path.remove();
          drawn.label.remove();
          drawnEdges.delete(id);
        }
      }
      const height = Math.max(120, 40 + Math.max(...rows) * ROW_H);
      canvas.setAttribute("viewBox", `0 0 960 ${height}`);
    },
  };
};

// ---- gateways ---------------------------------------------------------------------------

views.gateways = (parts) => {
  if (parts.length >= 2) return gatewayPage(parts[0], parts.slice(1).join("/"));
  const body = el("tbody");
  view.append(
    el("h1", {}, "Gateways"),
    el(
      "div",
      { class: "panel" },
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ["Name", "Namespace", "Port", "Hosts", "Routes", "State"].map((h) => el("th", {}, h)))),
        body
      )
    )
  );
  return {
    async refresh() {
      const { items } = await api("/api/v1/gateways");
      setRows(
        body,
        items.map((g) => [
          el("a", { href: `#/gateways/${enc(g.namespace)}/${enc(g.name)}` }, g.name),
          g.namespace,
          g.port,
          (g.virtual_hosts || []).join(", ") || "-",
          Object.keys(g.routes || {}).length,
          statusCell(g.status?.state || "pending"),
        ])
      );
    },
  };
};

function chart(title) {
  const box = el("div", { class: "chart" }, el("h3", {}, title));
  const canvas = svg("svg", { viewBox: "0 0 300 90", preserveAspectRatio: "none" });
  box.append(canvas);
  return { box, canvas };
}

function drawLines(canvas, series, keys, maxFloor = 1) {
  const values = series.flatMap((p) => keys.map((k) => p[k] ?? 0));
  const top = Math.max(maxFloor, ...values);
  const x = (i) => (series.length < 2 ? 0 : (300 * i) / (series.length - 1));
  for (const key of keys) {
    let line = canvas.querySelector(`polyline.${key}`);
    if (!line) {
      line = svg("polyline", { class: `line ${key}` });
      canvas.append(line);
    }
    const points = series.map((p, i) => `${x(i).toFixed(1)},${(86 - (70 * (p[key] ?? 0)) / top).toFixed(1)}`).join(" ");
    if (line.getAttribute("points") !== points) line.setAttribute("points", points);
  }
  let scale = canvas.querySelector("text");
  if (!scale) {
    scale = svg("text", { x: 2, y: 10, "font-size": 10, fill: "#6b7385" });
    canvas.append(scale);
  }
  scale.textContent = `max ${Math.round(top * 10) / 10}`;
}

function drawClasses(canvas, series) {
  const totals = series.map((p) => ["2xx", "3xx", "4xx", "5xx"].reduce((s, c) => s + (p.responses?.[c] || 0), 0));
  const top = Math.max(1, ...totals);
  const width = series.length ? 300 / series.length : 300;
  const bars = [];
  series.forEach((point, i) => {
    let y = 86;
    for (const cls of ["2xx", "3xx", "4xx", "5xx"]) {
      const count = point.responses?.[cls] || 0;
      if (!count) continue;
      const h = (70 * count) / top;
      y -= h;
      bars.push(`<rect class="c${cls}" x="${(i * width).toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, width - 1).toFixed(1)}" height="${h.toFixed(1)}"></rect>`);
    }
  });
  const markup = bars.join("");
  if (canvas.dataset.markup !== markup) {
    canvas.dataset.markup = markup;
    canvas.innerHTML = markup;
  }
}

function gatewayPage(namespace, name) {
  const title = el("h1", {}, `Gateway ${namespace === "default" ? "" : `${namespace}/`}${name}`);
  const summary = el("p", { class: "muted" });
  const notice = el("div", { class: "notice", hidden: true });
  const routesBody = el("tbody");
  const instancesBody = el("tbody");
  const charts = el("div");
  view.append(
    title,
    summary,
    notice,
    el(
      "div",
      { class: "panel" },
      el(
        "table",
        {},
        el(
          "thead",
          {},
          el("tr", {}, [
            el("th", {}, "Route"),
            el("th", {}, "Weight"),
            el("th", { class: "hide-narrow" }, "Condition"),
            el("th", { class: "num" }, "Rate/s"),
            el("th", { class: "num hide-narrow" }, "2xx/4xx/5xx"),
            el("th", { class: "num hide-narrow" }, "p50"),
            el("th", { class: "num" }, "p99"),
          ])
        ),
        routesBody
      )
    ),
    el("h2", {}, "Routes over time"),
    el("p", { class: "muted" }, "one point per analytics window (meshgate up --anomaly-window)"),
    charts,
    el("h2", {}, "Instances"),
    el(
      "div",
      { class: "panel" },
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ["Route", "Instance", "Address", "Node", "Health", "Requests"].map((h) => el("th", {}, h)))),
        instancesBody
      )
    )
  );
  let gateway = null; // the stored document, with version
  const routeCharts = new Map();
  const editing = new Map(); // route -> weight typed but not set yet

  async function setWeight(routeName, value) {
    // The route gets `value`; the others share the rest in proportion to their weights now.
    const weights = {};
    const names = Object.keys(gateway.routes);
    const others = names.filter((n) => n !== routeName);
    const effective = effectiveWeights(gateway);
    const rest = 100 - value;
    const base = others.reduce((s, n) => s + effective[n], 0);
    let given = 0;
    others.forEach((n, i) => {
      const share = i === others.length - 1 ? rest - given : base ? Math.floor((rest * effective[n]) / base) : Math.floor(rest / others.length);
      weights[n] = share;
      given += share;
    });
    weights[routeName] = value;
    const text = names.map((n) => `${n} ${weights[n]}%`).join(", ");
    if (!window.confirm(`Set the weights of ${name} to ${text}?`)) return;
    const document = structuredClone(gateway);
    delete document.version;
    delete document.status;
    for (const n of names) document.routes[n] = Object.assign({}, document.routes[n] || {}, { weight: weights[n] });
    try {
      await api(resourcePath("gateways", name, namespace), {
        method: "PUT",
        headers: { "Content-Type": "application/json", "If-Match": `"${gateway.version}"` },
        body: JSON.stringify(document),
      });
      notice.textContent = `Weights set: ${text}.`;
      notice.hidden = false;
      editing.delete(routeName);
    } catch (error) {
      if (error.status === 412) {
        editing.delete(routeName);
        notice.textContent = `${name} was changed by someone else meanwhile; nothing was written. This is its current state.`;
        notice.hidden = false;
      } else {
        showError(error);
        return;
      }
    }
    await refresh();
  }

  async function refresh() {
    // A server of many nodes keeps no history of its own: its charts stay empty.
    const withHistory = await hasPath("/api/v1/gateways/{name}/history");
    const [doc, stats, history] = await Promise.all([
      api(resourcePath("gateways", name, namespace)),
      api(`/api/v1/gateways/${enc(name)}/stats?namespace=${enc(namespace)}`),
      withHistory ? api(`/api/v1/gateways/${enc(name)}/history?namespace=${enc(namespace)}`) : { routes: {} },
    ]);
    gateway = doc;
    const state = doc.status?.state || "pending";
    const sticky = doc.sticky || "none";
    summary.textContent = `port ${doc.port}${(doc.virtual_hosts || []).length ? ` · hosts ${doc.virtual_hosts.join(", ")}` : ""} · sticky ${sticky} · ${state} · version ${doc.version}`;
    const effective = effectiveWeights(doc);
    const rows = Object.entries(doc.routes || {}).map(([routeName, routeDoc]) => {
      const figures = stats.routes?.[routeName] || {};
      const responses = figures.responses || {};
      const input = el("input", {
        type: "number",
        min: 0,
        max: 100,
        value: editing.get(routeName) ?? effective[routeName],
        "aria-label": `weight of ${routeName}`,
        "data-route": routeName,
        oninput: (event) => editing.set(routeName, event.target.value),
      });
      const button = el("button", {
        "data-route": routeName,
        onclick: () => {
          const value = Number.parseInt(input.value, 10);
          if (!(value >= 0 && value <= 100)) {
            showError(new Error(`the weight of ${routeName} must be 0-100`));
            return;
          }
          setWeight(routeName, value);
        },
      }, "Set");
      return [
        routeName,
        el("td", {}, input, " % ", button),
        el("td", { class: "hide-narrow" }, routeDoc?.condition || "-"),
        num((figures.rate ?? 0).toFixed(1)),
        el("td", { class: "num hide-narrow" }, `${responses["2xx"] ?? 0}/${responses["4xx"] ?? 0}/${responses["5xx"] ?? 0}`),
        el("td", { class: "num hide-narrow" }, ms(figures.latency_ms?.p50)),
        num(ms(figures.latency_ms?.p99)),
      ];
    });
    // Rows are rebuilt only when something other than what the user types changed.
    const typing = document.activeElement?.tagName === "INPUT" && document.activeElement.dataset.route;
    if (!typing) setRows(routesBody, rows);
    for (const routeName of Object.keys(doc.routes || {})) {
      let set = routeCharts.get(routeName);
      if (!set) {
        const rate = chart(`${routeName}: requests/s`);
        const classes = chart(`${routeName}: responses (2xx 3xx 4xx 5xx)`);
        const latency = chart(`${routeName}: p50 / p99 ms`);
        set = { rate, classes, latency };
        charts.append(el("div", { class: "charts" }, rate.box, classes.box, latency.box));
        routeCharts.set(routeName, set);
      }
      const series = history.routes?.[routeName] || [];
      drawLines(set.rate.canvas, series, ["rate"]);
      drawClasses(set.classes.canvas, series);
      drawLines(set.latency.canvas, series, ["p50_ms", "p99_ms"]);
    }
    const instanceRows = [];
    for (const [routeName, figures] of Object.entries(stats.routes || {})) {
      for (const instance of figures.instances || []) {
        instanceRows.push([
          routeName,
          instance.id,
          `${instance.address}:${instance.port}`,
          instance.node || "this node",
          statusCell(instance.status),
          num(instance.requests),
        ]);
      }
    }
    setRows(instancesBody, instanceRows);
  }

  return { refresh };
}

function effectiveWeights(doc) {
  const names = Object.keys(doc.routes || {});
  const given = {};
  let total = 0;
  for (const n of names) {
    const w = doc.routes[n]?.weight;
    if (w !== undefined && w !== null) {
      given[n] = Number.parseInt(String(w), 10);
      total += given[n];
    }
  }
  const unweighted = names.filter((n) => !(n in given));
  const share = unweighted.length ? Math.floor((100 - total) / unweighted.length) : 0;
  unweighted.forEach((n, i) => {
    given[n] = i === unweighted.length - 1 ? 100 - total - share * (unweighted.length - 1) : share;
  });
  return given;
}

// ---- services and nodes -----------------------------------------------------------------

views.services = () => {
  const body = el("tbody");
  const nodesBody = el("tbody");
  const nodesNote = el("p", { class: "muted" });
  view.append(
    el("h1", {}, "Services"),
    el("div", { class: "panel" }, el("table", {}, el("thead", {}, el("tr", {}, ["Service", "Instance", "Address", "Health", "Source", "Node"].map((h) => el("th", {}, h)))), body)),
    el("h2", {}, "Nodes"),
    nodesNote,
    el("div", { class: "panel" }, el("table", {}, el("thead", {}, el("tr", {}, ["Node", "Address", "Status", "Applied revision"].map((h) => el("th", {}, h)))), nodesBody))
  );
  return {
    async refresh() {
      const { items } = await api("/api/v1/services");
      const rows = [];
      for (const service of items) {
        const instances = service.status?.instances || [];
        if (!instances.length) rows.push([service.name, "-", "-", "-", "-", "-"]);
        for (const instance of instances) {
          rows.push([service.name, instance.id, `${instance.address}:${instance.port}`, statusCell(instance.status), instance.source, instance.node || "this node"]);
        }
      }
      setRows(body, rows);
      if (await hasPath("/api/v1/nodes")) {
        const nodes = await api("/api/v1/nodes");
        nodesNote.textContent = "";
        setRows(nodesBody, (nodes.items || []).map((n) => [n.name, n.address || "-", statusCell(n.status), n.applied_revision ?? "-"]));
      } else {
        nodesNote.textContent = "A single node (meshgate up): this meshgate runs the data plane itself.";
        const health = await api("/healthz");
        setRows(nodesBody, [["this node", location.host, statusCell(health.status === "ok" ? "Ready" : "NotReady"), health.revision ?? "-"]]);
      }
    },
  };
};

// ---- rollouts ---------------------------------------------------------------------------

views.rollouts = () => {
  const body = el("tbody");
  const form = el(
    "form",
    { class: "inline", id: "rollout-form" },
    el("label", {}, "Name", el("input", { name: "name", required: true })),
    el("label", {}, "Gateway", el("input", { name: "gateway", required: true })),
    el("label", {}, "Canary route", el("input", { name: "canary", required: true })),
    el("label", {}, "Steps", el("input", { name: "steps", value: "5%, 25%, 50%, 100%" })),
    el("label", {}, "Interval", el("input", { name: "interval", value: "30s", size: 6 })),
    el("label", {}, "Min. success", el("input", { name: "success_rate", value: "99%", size: 6 })),
    el("button", { type: "submit" }, "Start rollout")
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const document = {
      kind: "rollout",
      name: data.get("name"),
      gateway: data.get("gateway"),
      canary: data.get("canary"),
      steps: String(data.get("steps")).split(",").map((s) => s.trim()).filter(Boolean),
      interval: data.get("interval"),
      analysis: { success_rate: data.get("success_rate") },
    };
    try {
      await api("/api/v1/rollouts", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(document) });
      form.reset();
      await tick();
    } catch (error) {
      showError(error);
    }
  });
  view.append(
    el("h1", {}, "Rollouts"),
    el("div", { class: "panel" }, el("table", {}, el("thead", {}, el("tr", {}, ["Rollout", "Gateway", "Canary", "Phase", "Step", "Weight", "Reason", ""].map((h) => el("th", {}, h)))), body)),
    el("h2", {}, "Start a rollout"),
    el("div", { class: "panel" }, form)
  );
  async function command(rollout, action) {
    try {
      await api(`/api/v1/rollouts/${enc(rollout.name)}/${action}?namespace=${enc(rollout.namespace)}`, { method: "POST" });
      await tick();
    } catch (error) {
      showError(error);
    }
  }
  return {
    async refresh() {
      const { items } = await api("/api/v1/rollouts");
      setRows(
        body,
        items.map((r) => {
          const status = r.status || {};
          const phase = status.phase || "Pending";
          const buttons = el(
            "td",
            {},
            el("button", { disabled: phase !== "Progressing", onclick: () => command(r, "pause") }, "Pause"),
            " ",
            el("button", { disabled: phase !== "Paused", onclick: () => command(r, "resume") }, "Resume"),
            " ",
            el("button", { class: "secondary", disabled: !["Progressing", "Paused"].includes(phase), onclick: () => command(r, "abort") }, "Abort")
          );
          return [r.name, r.gateway, r.canary, statusCell(phase), status.step === undefined ? "-" : `${status.step + 1}/${(r.steps || []).length}`, status.weight === undefined ? "-" : `${status.weight}%`, status.reason || "", buttons];
        })
      );
    },
  };
};

// ---- events -----------------------------------------------------------------------------

views.events = () => {
  const body = el("tbody");
  const note = el("p", { class: "muted" });
  view.append(
    el("h1", {}, "Recent events"),
    note,
    el("div", { class: "panel" }, el("table", {}, el("thead", {}, el("tr", {}, ["Time", "What", "Resource", "Message"].map((h) => el("th", {}, h)))), body))
  );
  return {
    async refresh() {
      const rows = [];
      if (await hasPath("/api/v1/events")) {
        const events = await api("/api/v1/events");
        for (const event of events.items || []) {
          const when = event.time ?? event.at;
          const resource = [event.kind, event.namespace, event.name].filter(Boolean).join("/");
          rows.push({ at: typeof when === "number" ? when : Date.parse(when) / 1000, cells: [event.type || event.reason || "", resource, event.message || ""] });
        }
        note.textContent = "Reloads, rejections, health changes, registrations, rollouts and route anomalies.";
      } else {
        // A server without an event log still knows its route anomalies.
        note.textContent = "This server keeps no event log; route anomalies are shown.";
        const anomalies = await api("/api/v1/anomalies");
        for (const event of anomalies.events || []) {
          rows.push({ at: event.at, cells: [`anomaly ${event.state}`, `gateway/${event.namespace}/${event.gateway} route ${event.route}`, event.description] });
        }
      }
      rows.sort((a, b) => b.at - a.at);
      setRows(body, rows.slice(0, 200).map((r) => [new Date(r.at * 1000).toLocaleTimeString(), ...r.cells]));
    },
  };
};

// ---- start ------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
route();
setInterval(tick, REFRESH_MS);
