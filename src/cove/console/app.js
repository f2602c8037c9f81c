// The Cove console: a page of the API (served at /console) that speaks the same Trove v1.0
// API as every other client, with the token of the identity service. No build step, no
// library: the DOM is built with `h()`, never from HTML strings, so nothing a user or a
// server wrote is ever read as markup.

const POLL_MS = 3000;
const SAMPLES = 60;
const PORTS = { postgresql: 5432, mariadb: 3306, redis: 6379 };
const SCHEMES = { postgresql: "postgresql", mariadb: "mysql", redis: "redis" };

// A datastore's default version's name (the view gives its id).
function defaultVersion(ds) {
  const versions = ds.versions || [];
  const found = versions.find((v) => v.id === ds.default_version) || versions[versions.length - 1];
  return found ? found.name : "";
}

function flavorOptions(flavors) {
  return flavors.map((f) => [f.str_id, `${f.name} (${f.ram} MB, ${f.vcpus} vCPU)`]);
}

function datastoreOptions(datastores) {
  return datastores.map((d) => [`${d.name}:${defaultVersion(d)}`, `${d.name} ${defaultVersion(d)}`]);
}

// -- the session -------------------------------------------------------------------------------

const session = {
  get() {
    const raw = sessionStorage.getItem("cove.session");
    if (!raw) return null;
    const s = JSON.parse(raw);
    if (Date.parse(s.expires) <= Date.now()) {
      sessionStorage.removeItem("cove.session");
      return null;
    }
    return s;
  },
  set(s) { sessionStorage.setItem("cove.session", JSON.stringify(s)); },
  clear() { sessionStorage.removeItem("cove.session"); },
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The message of an error answer: Trove's envelope {"badRequest": {"code", "message"}},
// or the identity service's {"error": {"message"}}.
async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    const fault = body && typeof body === "object" ? Object.values(body)[0] : null;
    if (fault && typeof fault.message === "string") message = fault.message;
  } catch (_) { /* not JSON: the status line says it */ }
  return new ApiError(resp.status, message);
}

async function api(method, path, body) {
  const s = session.get();
  if (!s) {
    go("#/login");
    throw new ApiError(401, "Your session ended; sign in again.");
  }
  const init = { method, headers: { "X-Auth-Token": s.token, Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(`/v1.0/${encodeURIComponent(s.project.id)}${path}`, init);
  if (resp.status === 401) {
    session.clear();
    const err = await errorOf(resp);
    go("#/login");
    throw err;
  }
  if (!resp.ok) throw await errorOf(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

// Every item of a paginated list, following its `next` links by their marker.
async function all(path, key) {
  const items = [];
  let marker = null;
  for (let page = 0; page < 100; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const body = await api("GET", marker ? `${path}${sep}marker=${encodeURIComponent(marker)}` : path);
    items.push(...(body[key] || []));
    const next = (body.links || []).find((l) => l.rel === "next");
    marker = next ? new URL(next.href, location.href).searchParams.get("marker") : null;
    if (!marker) break;
  }
  return items;
}

async function signIn(user, password, project) {
  const resp = await fetch("/identity/v3/auth/tokens", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      auth: {
        identity: {
          methods: ["password"],
          password: { user: { name: user, domain: { id: "default" }, password } },
        },
        scope: { project: { name: project, domain: { id: "default" } } },
      },
    }),
  });
  if (!resp.ok) throw await errorOf(resp);
  const token = resp.headers.get("X-Subject-Token");
  const body = await resp.json();
  session.set({
    token,
    expires: body.token.expires_at,
    project: { id: body.token.project.id, name: body.token.project.name },
    user: body.token.user.name,
  });
}

// -- building the page -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let uid = 0;
// A labelled control: the label names it for screen readers, the hint describes it.
function field(label, control, hint) {
  const id = control.id || `f${++uid}`;
  control.id = id;
  const hintNode = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", {}, h("label", { for: id }, label, hintNode), control);
}

function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

function status(text) {
  return h("span", { class: `status status-${text || "unknown"}` }, text || "");
}

function fields(pairs) {
  return h("dl", { class: "fields" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function showError(err) {
  const box = document.getElementById("alert");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function clearMessages() {
  const box = document.getElementById("alert");
  box.hidden = true;
  box.textContent = "";
  document.getElementById("notice").textContent = "";
}

// A notice outlives the navigation its action asked for (a create opens the new instance's
// page), and no other.
let carried = null;

function notice(text) {
  document.getElementById("notice").textContent = text;
  carried = { text, at: Date.now() };
}

// Runs `work` for a form or button: disabled meanwhile, its error shown in words.
async function act(control, work) {
  clearMessages();
  control.disabled = true;
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    control.disabled = false;
  }
}

function onSubmit(form, work) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    act(button || form, () => work(new FormData(form)));
  });
  return form;
}

function confirmThen(message, work) {
  return (event) => {
    if (window.confirm(message)) act(event.currentTarget, work);
  };
}

// -- navigation --------------------------------------------------------------------------------

let view = 0; // bumped at each navigation: a poll of an older view stops
const timers = [];

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function every(ms, work) {
  const mine = view;
  const tick = async () => {
    if (mine !== view) return;
    try {
      await work();
    } catch (err) {
      if (mine === view) showError(err);
    }
    if (mine === view) timers.push(setTimeout(tick, ms));
  };
  timers.push(setTimeout(tick, ms));
}

const ROUTES = [
  [/^#\/login$/, loginView],
  [/^#\/instances$/, instancesView],
  [/^#\/instances\/new$/, createInstanceView],
  [/^#\/instances\/([\w-]+)$/, instanceView],
  [/^#\/backups$/, backupsView],
  [/^#\/clusters$/, clustersView],
  [/^#\/clusters\/new$/, createClusterView],
  [/^#\/clusters\/([\w-]+)$/, clusterView],
  [/^#\/configurations$/, configurationsView],
  [/^#\/configurations\/new$/, createConfigurationView],
  [/^#\/configurations\/([\w-]+)$/, configurationView],
];

async function render() {
  view += 1;
  while (timers.length) clearTimeout(timers.pop());
  const kept = carried && Date.now() - carried.at < 2000 ? carried.text : "";
  carried = null;
  clearMessages();
  document.getElementById("notice").textContent = kept;
  const s = session.get();
  const hash = location.hash || "#/instances";
  if (!s && hash !== "#/login") return go("#/login");
  document.getElementById("nav").hidden = !s;
  document.getElementById("logout").hidden = !s;
  document.getElementById("who").textContent = s ? `${s.user} in project ${s.project.name}` : "";
  for (const link of document.querySelectorAll("#nav a")) {
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  const route = ROUTES.find(([pattern]) => pattern.test(hash));
  const mine = view;
  main.replaceChildren(h("p", { class: "empty" }, "Loading…"));
  try {
    const content = route ? await route[1](...hash.match(route[0]).slice(1)) : notFound();
    if (mine !== view) return;
    main.replaceChildren(content);
  } catch (err) {
    if (mine !== view) return;
    main.replaceChildren(h("h1", {}, "Something went wrong"));
    showError(err);
  }
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.textContent} · Cove console` : "Cove console";
  (heading || main).setAttribute("tabindex", "-1");
  (heading || main).focus();
}

function notFound() {
  return h("div", {}, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/instances" }, "Instances")));
}

// -- signing in --------------------------------------------------------------------------------

function loginView() {
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "login-title" },
    field("User name", h("input", { name: "user", autocomplete: "username", required: true })),
    field("Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    field("Project", h("input", { name: "project", required: true, value: "admin" })),
    h("button", { type: "submit" }, "Sign in"),
  );
  onSubmit(form, async (data) => {
    await signIn(data.get("user"), data.get("password"), data.get("project"));
    go("#/instances");
  });
  return h("div", {}, h("h1", { id: "login-title" }, "Sign in to Cove"), form);
}

// -- instances ---------------------------------------------------------------------------------

function address(inst) {
  return (inst.ip || []).join(", ");
}

function instanceRows(instances) {
  return instances.map((i) => [
    h("a", { href: `#/instances/${i.id}` }, i.name),
    `${i.datastore.type} ${i.datastore.version || ""}`,
    status(i.status),
    status(i.operating_status),
    i.flavor.id,
    i.volume ? `${i.volume.size} GB` : "",
    address(i),
  ]);
}

async function instancesView() {
  const headers = ["Name", "Datastore", "Status", "Health", "Flavor", "Volume", "Address"];
  const holder = h("div", {});
  const fill = async () => {
    const list = await all("/instances?include_clustered=true", "instances");
    holder.replaceChildren(table("Instances of the project, newest first; refreshed every 3 seconds", headers, instanceRows(list), "No instances yet."));
  };
  await fill();
  every(POLL_MS, fill);
  return h(
    "div",
    {},
    h("h1", {}, "Instances"),
    h("a", { class: "button", href: "#/instances/new" }, "Create instance"),
    holder,
  );
}

async function createInstanceView() {
  const params = new URLSearchParams(location.search);
  const [datastores, flavors, groups, instances] = await Promise.all([
    all("/datastores", "datastores"),
    all("/flavors", "flavors"),
    all("/configurations", "configurations"),
    all("/instances", "instances"),
  ]);
  const restoring = sessionStorage.getItem("cove.restore");
  sessionStorage.removeItem("cove.restore");
  const dsSelect = select("datastore", datastores.map((d) => [d.name, d.name]), datastores[0] && datastores[0].name);
  const versionSelect = h("select", { name: "version" });
  const fillVersions = () => {
    const ds = datastores.find((d) => d.name === dsSelect.value);
    const versions = (ds ? ds.versions : []).filter((v) => v.active !== 0 && v.active !== false);
    versionSelect.replaceChildren(...versions.map((v) => h("option", { value: v.name, selected: ds && v.name === defaultVersion(ds) }, v.name)));
  };
  dsSelect.addEventListener("change", fillVersions);
  fillVersions();
  const users = h("div", {});
  const addUser = () => {
    const n = users.children.length + 1;
    users.append(
      h(
        "fieldset",
        {},
        h("legend", {}, `User ${n}`),
        field("User name", h("input", { name: "user_name", autocomplete: "off" })),
        field("Password", h("input", { name: "user_password", type: "password", autocomplete: "new-password" })),
      ),
    );
  };
  addUser();
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-title" },
    field("Name", h("input", { name: "name", required: true, maxlength: 255 })),
    field("Datastore", dsSelect),
    field("Version", versionSelect),
    field("Flavor", select("flavor", flavorOptions(flavors))),
    field("Volume size (GB)", h("input", { name: "size", type: "number", min: 1, value: 1, required: true })),
    field("Databases", h("input", { name: "databases" }), "Names separated by commas; users get access to all of them."),
    h("div", {}, users, h("button", { type: "button", class: "secondary", onclick: addUser }, "Add another user")),
    field("Configuration group", select("configuration", [["", "None"], ...groups.map((g) => [g.id, `${g.name} (${g.datastore_name} ${g.datastore_version_name})`])])),
    field("Replica of", select("replica_of", [["", "None: a new primary"], ...instances.map((i) => [i.id, i.name])]), "Makes the new instance a read-only replica of this one."),
    field("Replicas", h("input", { name: "replica_count", type: "number", min: 1, value: 1 }), "How many replicas, when it is a replica."),
    field("Restore from backup", h("input", { name: "backup", value: restoring || params.get("backup") || "" }), "A backup's id; empty for a new, empty instance."),
    h("button", { type: "submit" }, "Create instance"),
  );
  onSubmit(form, async (data) => {
    const dbs = String(data.get("databases") || "").split(",").map((x) => x.trim()).filter(Boolean);
    const names = data.getAll("user_name").map(String);
    const passwords = data.getAll("user_password").map(String);
    const instance = {
      name: data.get("name"),
      flavorRef: data.get("flavor"),
      volume: { size: Number(data.get("size")) },
      datastore: { type: data.get("datastore"), version: data.get("version") },
    };
    if (dbs.length) instance.databases = dbs.map((name) => ({ name }));
    const userList = names
      .map((name, n) => ({ name: name.trim(), password: passwords[n], databases: dbs.map((d) => ({ name: d })) }))
      .filter((u) => u.name);
    if (userList.length) instance.users = userList;
    if (data.get("configuration")) instance.configuration = data.get("configuration");
    if (data.get("backup")) instance.restorePoint = { backupRef: String(data.get("backup")).trim() };
    if (data.get("replica_of")) {
      instance.replica_of = data.get("replica_of");
      instance.replica_count = Number(data.get("replica_count") || 1);
      delete instance.datastore;
    }
    const body = await api("POST", "/instances", { instance });
    notice(`Instance ${body.instance.name} is being created.`);
    go(`#/instances/${body.instance.id}`);
  });
  return h("div", {}, h("h1", { id: "create-title" }, "Create an instance"), form);
}

function connectionString(inst) {
  const ds = inst.datastore.type;
  const host = inst.endpoints ? inst.endpoints.read_write : `${(inst.ip || ["<address>"])[0]}:${inst.port || PORTS[ds]}`;
  const scheme = SCHEMES[ds] || ds;
  return ds === "redis" ? `${scheme}://USER:PASSWORD@${host}` : `${scheme}://USER:PASSWORD@${host}/DATABASE`;
}

const samples = new Map(); // instance id -> [{at, vitals}]

function chart(title, values, unit) {
  const shown = values.filter((v) => v !== null && Number.isFinite(v));
  const last = shown.length ? shown[shown.length - 1] : null;
  const label = last === null ? `${title}: no data yet` : `${title}: ${Math.round(last * 100) / 100} ${unit}`;
  const max = Math.max(1, ...shown);
  const points = values
    .map((v, n) => (v === null ? null : `${(n / Math.max(1, values.length - 1)) * 100},${40 - (v / max) * 38}`))
    .filter(Boolean)
    .join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return h("figure", { class: "chart" }, h("figcaption", {}, label), svg);
}

function rate(series, key) {
  return series.map((s, n) => {
    if (n === 0) return null;
    const before = series[n - 1];
    const a = before.vitals[key];
    const b = s.vitals[key];
    const seconds = (s.at - before.at) / 1000;
    if (a === null || b === null || b < a || seconds <= 0) return null;
    return (b - a) / seconds;
  });
}

function charts(id) {
  const series = samples.get(id) || [];
  const pick = (key) => series.map((s) => s.vitals[key]);
  const hitRatio = series.map((s) => {
    const { cache_hits: hits, cache_reads: reads } = s.vitals;
    return hits === null || !reads ? null : (100 * hits) / reads;
  });
  return h(
    "div",
    { class: "charts" },
    chart("Connections", pick("connections"), ""),
    chart("Commits per second", rate(series, "commits"), "/s"),
    chart("Operations per second", rate(series, "operations"), "/s"),
    chart("Cache hit ratio", hitRatio, "%"),
    chart("Memory used", pick("memory_used_mb"), "MB"),
    chart("Volume used", pick("volume_used_mb"), "MB"),
    chart("Replication lag", pick("replication_lag_seconds"), "s"),
  );
}

async function instanceView(id) {
  const inst = (await api("GET", `/instances/${id}`)).instance;
  const ds = inst.datastore.type;
  const top = h("div", {});
  const chartBox = h("div", {});
  const fillTop = (i) => {
    top.replaceChildren(
      fields([
        ["Status", status(i.status)],
        ["Health", status(i.operating_status)],
        ["Datastore", `${i.datastore.type} ${i.datastore.version}`],
        ["Flavor", i.flavor.id],
        ["Volume", `${i.volume.size} GB`],
        ["Address", address(i) || "not yet"],
        ["Connection string", h("code", { class: "conn" }, connectionString(i))],
        i.replica_of ? ["Replica of", h("a", { href: `#/instances/${i.replica_of.id}` }, i.replica_of.id)] : null,
        i.replicas ? ["Replicas", i.replicas.map((r) => h("a", { href: `#/instances/${r.id}` }, r.id, " "))] : null,
        i.configuration ? ["Configuration group", h("a", { href: `#/configurations/${i.configuration.id}` }, i.configuration.name)] : null,
        i.fault ? ["Fault", i.fault.message] : null,
        ["Created", i.created],
      ]),
    );
  };
  fillTop(inst);
  const poll = async () => {
    const fresh = (await api("GET", `/instances/${id}`)).instance;
    fillTop(fresh);
    const vitals = (await api("GET", `/instances/${id}/vitals`)).vitals;
    const series = samples.get(id) || [];
    series.push({ at: Date.now(), vitals });
    samples.set(id, series.slice(-SAMPLES));
    chartBox.replaceChildren(charts(id));
  };
  chartBox.replaceChildren(charts(id));
  every(POLL_MS, poll);
  const [flavors, groups] = await Promise.all([all("/flavors", "flavors"), all("/configurations", "configurations")]);

  const restart = h("button", { type: "button", onclick: (e) => act(e.currentTarget, async () => {
    await api("POST", `/instances/${id}/action`, { restart: {} });
    notice(`Instance ${inst.name} is restarting.`);
  }) }, "Restart");
  const remove = h("button", { type: "button", class: "danger", onclick: confirmThen(`Delete instance ${inst.name}? Its data is lost; its backups stay.`, async () => {
    await api("DELETE", `/instances/${id}`);
    notice(`Instance ${inst.name} is being deleted.`);
    go("#/instances");
  }) }, "Delete");
  const resizeFlavor = onSubmit(
    h("form", { "aria-label": "Resize the flavor" }, field("New flavor", select("flavor", flavorOptions(flavors), inst.flavor.id)), h("button", { type: "submit", class: "secondary" }, "Resize flavor")),
    async (data) => {
      await api("POST", `/instances/${id}/action`, { resize: { flavorRef: data.get("flavor") } });
      notice("The instance is being resized.");
    },
  );
  const resizeVolume = onSubmit(
    h("form", { "aria-label": "Grow the volume" }, field("New volume size (GB)", h("input", { name: "size", type: "number", min: inst.volume.size + 1, value: inst.volume.size + 1 })), h("button", { type: "submit", class: "secondary" }, "Grow volume")),
    async (data) => {
      await api("POST", `/instances/${id}/action`, { resize: { volume: { size: Number(data.get("size")) } } });
      notice("The volume is being grown.");
    },
  );
  const backup = onSubmit(
    h("form", { "aria-label": "Back up" }, field("Backup name", h("input", { name: "name", required: true, value: `${inst.name}-backup` })), h("button", { type: "submit" }, "Back up")),
    async (data) => {
      const body = await api("POST", "/backups", { backup: { name: data.get("name"), instance: id } });
      notice(`Backup ${body.backup.name} started.`);
      go(`#/instances/${id}`);
    },
  );
  const matching = groups.filter((g) => g.datastore_name === ds && g.datastore_version_name === inst.datastore.version);
  const configure = onSubmit(
    h("form", { "aria-label": "Configuration group" }, field("Configuration group", select("group", [["", "None (defaults)"], ...matching.map((g) => [g.id, g.name])], inst.configuration ? inst.configuration.id : "")), h("button", { type: "submit", class: "secondary" }, "Apply")),
    async (data) => {
      const group = data.get("group") || null;
      await api("PUT", `/instances/${id}`, { instance: { configuration: group } });
      notice(group ? "The configuration group is attached." : "The configuration group is detached.");
    },
  );
  const replicas = onSubmit(
    h("form", { "aria-label": "Add replicas" }, field("Replicas to add", h("input", { name: "count", type: "number", min: 1, max: 5, value: 1 })), h("button", { type: "submit", class: "secondary" }, "Add replicas")),
    async (data) => {
      await api("POST", "/instances", { instance: { name: `${inst.name}-replica`, replica_of: id, replica_count: Number(data.get("count")) } });
      notice("Replicas are being created.");
    },
  );

  const sections = await Promise.all([
    databasesSection(id, ds),
    usersSection(id, ds),
    backupsSection(id),
    eventsSection(id),
    logsSection(id),
  ]);
  return h(
    "div",
    {},
    h("h1", {}, `Instance ${inst.name}`),
    h("section", { class: "card", "aria-label": "Overview" }, top),
    h("section", { class: "card", "aria-labelledby": "actions-title" }, h("h2", { id: "actions-title" }, "Actions"), h("div", { class: "actions" }, restart, remove, resizeFlavor, resizeVolume, backup, configure, replicas)),
    h("section", { class: "card", "aria-labelledby": "metrics-title" }, h("h2", { id: "metrics-title" }, "Metrics"), h("p", { class: "hint" }, "From the instance's heartbeats, sampled every 3 seconds while this page is open."), chartBox),
    sections,
  );
}

async function guarded(title, work) {
  // A section the datastore does not have (Redis has no databases) says so instead of failing.
  try {
    return await work();
  } catch (err) {
    return h("section", { class: "card" }, h("h2", {}, title), h("p", { class: "empty" }, err.message));
  }
}

function databasesSection(id) {
  return guarded("Databases", async () => {
    const list = await all(`/instances/${id}/databases`, "databases");
    const add = onSubmit(
      h("form", { "aria-label": "Add a database", class: "actions" }, field("New database", h("input", { name: "name", required: true })), h("button", { type: "submit", class: "secondary" }, "Add database")),
      async (data) => {
        await api("POST", `/instances/${id}/databases`, { databases: [{ name: data.get("name") }] });
        go(`#/instances/${id}`);
      },
    );
    const rows = list.map((d) => [d.name, h("button", { type: "button", class: "secondary", "aria-label": `Delete database ${d.name}`, onclick: confirmThen(`Delete database ${d.name}?`, async () => {
      await api("DELETE", `/instances/${id}/databases/${encodeURIComponent(d.name)}`);
      go(`#/instances/${id}`);
    }) }, "Delete")]);
    return h("section", { class: "card", "aria-labelledby": "dbs-title" }, h("h2", { id: "dbs-title" }, "Databases"), table("Databases", ["Name", ""], rows, "No databases."), add);
  });
}

function usersSection(id) {
  return guarded("Users", async () => {
    const list = await all(`/instances/${id}/users`, "users");
    const add = onSubmit(
      h("form", { "aria-label": "Add a user", class: "actions" },
        field("User name", h("input", { name: "name", required: true, autocomplete: "off" })),
        field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" })),
        field("Databases", h("input", { name: "databases" }), "Comma-separated"),
        h("button", { type: "submit", class: "secondary" }, "Add user")),
      async (data) => {
        const dbs = String(data.get("databases") || "").split(",").map((x) => x.trim()).filter(Boolean);
        await api("POST", `/instances/${id}/users`, { users: [{ name: data.get("name"), password: data.get("password"), databases: dbs.map((name) => ({ name })) }] });
        go(`#/instances/${id}`);
      },
    );
    const rows = list.map((u) => [u.name, (u.databases || []).map((d) => d.name).join(", "), h("button", { type: "button", class: "secondary", "aria-label": `Delete user ${u.name}`, onclick: confirmThen(`Delete user ${u.name}?`, async () => {
      await api("DELETE", `/instances/${id}/users/${encodeURIComponent(u.name)}`);
      go(`#/instances/${id}`);
    }) }, "Delete")]);
    return h("section", { class: "card", "aria-labelledby": "users-title" }, h("h2", { id: "users-title" }, "Users"), table("Users", ["Name", "Databases", ""], rows, "No users."), add);
  });
}

function restoreButton(b) {
  return h("button", { type: "button", class: "secondary", "aria-label": `Restore backup ${b.name}`, disabled: b.status !== "COMPLETED", onclick: () => {
    sessionStorage.setItem("cove.restore", b.id);
    go("#/instances/new");
  } }, "Restore");
}

function size(gb) {
  if (gb === null || gb === undefined) return "";
  return gb >= 1 ? `${gb.toFixed(2)} GB` : `${(gb * 1024).toFixed(1)} MB`;
}

// `names` maps instance ids to names; a deleted instance's backup shows its id.
function backupRows(list, names) {
  return list.map((b) => [
    b.name,
    status(b.status),
    size(b.size),
    b.created,
    names.has(b.instance_id) ? h("a", { href: `#/instances/${b.instance_id}` }, names.get(b.instance_id)) : b.instance_id,
    restoreButton(b),
  ]);
}

async function instanceNames() {
  const list = await all("/instances?include_clustered=true", "instances");
  return new Map(list.map((i) => [i.id, i.name]));
}

function backupsSection(id) {
  return guarded("Backups", async () => {
    const list = await all(`/instances/${id}/backups`, "backups");
    return h("section", { class: "card", "aria-labelledby": "backups-title" }, h("h2", { id: "backups-title" }, "Backups"), table("Backups of this instance, newest first", ["Name", "Status", "Size", "Created", "Instance", ""], backupRows(list, await instanceNames()), "No backups yet."));
  });
}

function eventsSection(id) {
  return guarded("Events", async () => {
    const list = (await api("GET", `/instances/${id}/events?limit=20`)).events;
    const rows = list.map((e) => [e.timestamp, e.event_type, (e.payload && (e.payload.message || e.payload.state)) || ""]);
    return h("section", { class: "card", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), table("The instance's newest events", ["Time", "Event", "Detail"], rows, "No events yet."));
  });
}

function logsSection(id) {
  return guarded("Logs", async () => {
    const list = (await api("GET", `/instances/${id}/log`)).logs;
    const button = (log, flag, text) => h("button", { type: "button", class: "secondary", "aria-label": `${text} the ${log.name} log`, onclick: (e) => act(e.currentTarget, async () => {
      const shown = (await api("POST", `/instances/${id}/log`, { name: log.name, [flag]: 1 })).log;
      notice(`The ${shown.name} log is ${shown.status.toLowerCase()}.`);
      go(`#/instances/${id}`);
    }) }, text);
    const rows = list.map((l) => [l.name, l.type, l.status, `${l.published} bytes`, `${l.pending} bytes`, [
      l.type === "USER" ? button(l, l.status === "Disabled" ? "enable" : "disable", l.status === "Disabled" ? "Enable" : "Disable") : null,
      button(l, "publish", "Publish"),
    ]]);
    return h("section", { class: "card", "aria-labelledby": "logs-title" }, h("h2", { id: "logs-title" }, "Logs"), table("The server's logs; published ones are read with openstack database log tail", ["Log", "Type", "Status", "Published", "Pending", ""], rows, "No logs."));
  });
}

// -- backups -----------------------------------------------------------------------------------

async function backupsView() {
  const holder = h("div", {});
  const fill = async () => {
    const [list, names] = await Promise.all([all("/backups", "backups"), instanceNames()]);
    holder.replaceChildren(table("Backups of the project, newest first; refreshed every 3 seconds", ["Name", "Status", "Size", "Created", "Instance", ""], backupRows(list, names), "No backups yet."));
  };
  await fill();
  every(POLL_MS, fill);
  const instances = await all("/instances", "instances");
  const create = onSubmit(
    h("form", { class: "card actions", "aria-label": "Create a backup" },
      field("Instance", select("instance", instances.map((i) => [i.id, i.name]))),
      field("Backup name", h("input", { name: "name", required: true })),
      h("button", { type: "submit" }, "Create backup")),
    async (data) => {
      const body = await api("POST", "/backups", { backup: { name: data.get("name"), instance: data.get("instance") } });
      notice(`Backup ${body.backup.name} started.`);
      await fill();
    },
  );
  return h("div", {}, h("h1", {}, "Backups"), create, holder);
}

// -- clusters ----------------------------------------------------------------------------------

async function clustersView() {
  const list = await all("/clusters", "clusters");
  const rows = list.map((c) => [h("a", { href: `#/clusters/${c.id}` }, c.name), `${c.datastore.type} ${c.datastore.version}`, c.task.name, String((c.instances || []).length), (c.ip || []).join(", ")]);
  return h("div", {}, h("h1", {}, "Clusters"), h("a", { class: "button", href: "#/clusters/new" }, "Create cluster"), table("Clusters of the project", ["Name", "Datastore", "Task", "Members", "Endpoint"], rows, "No clusters yet."));
}

function memberFieldset(n) {
  return h("fieldset", {}, h("legend", {}, `Member ${n}`), field("Weight", h("input", { name: "weight", type: "number", min: 0, max: 1000, value: 100 }), "PostgreSQL only: the heaviest of the most advanced replicas is promoted."));
}

async function createClusterView() {
  const [datastores, flavors] = await Promise.all([all("/datastores", "datastores"), all("/flavors", "flavors")]);
  const members = h("div", {}, memberFieldset(1), memberFieldset(2), memberFieldset(3));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "cluster-title" },
    field("Name", h("input", { name: "name", required: true })),
    field("Datastore", select("datastore", datastoreOptions(datastores))),
    field("Flavor", select("flavor", flavorOptions(flavors))),
    field("Volume size (GB)", h("input", { name: "size", type: "number", min: 1, value: 1 })),
    members,
    h("button", { type: "button", class: "secondary", onclick: () => members.append(memberFieldset(members.children.length + 1)) }, "Add a member"),
    h("button", { type: "button", class: "secondary", onclick: () => members.children.length > 1 && members.lastChild.remove() }, "Remove the last member"),
    h("div", {}, h("button", { type: "submit" }, "Create cluster")),
  );
  onSubmit(form, async (data) => {
    const [type, version] = String(data.get("datastore")).split(":");
    const instances = data.getAll("weight").map((w) => {
      const item = { flavorRef: data.get("flavor"), volume: { size: Number(data.get("size")) } };
      if (type === "postgresql") item.weight = Number(w);
      return item;
    });
    const body = await api("POST", "/clusters", { cluster: { name: data.get("name"), datastore: { type, version }, instances } });
    go(`#/clusters/${body.cluster.id}`);
  });
  return h("div", {}, h("h1", { id: "cluster-title" }, "Create a cluster"), form);
}

async function clusterView(id) {
  const cluster = (await api("GET", `/clusters/${id}`)).cluster;
  const holder = h("div", {});
  const fill = (c) => holder.replaceChildren(
    fields([["Task", c.task.description || c.task.name], ["Datastore", `${c.datastore.type} ${c.datastore.version}`], ["Endpoint", (c.ip || []).join(", ") || "not yet"]]),
    table("Members", ["Name", "Role", "Weight", "Status", "Address", ""], (c.instances || []).map((m) => [
      h("a", { href: `#/instances/${m.id}` }, m.name), m.type, m.weight === undefined ? "" : String(m.weight), status(m.status), (m.ip || []).join(", "),
      h("button", { type: "button", class: "secondary", "aria-label": `Remove member ${m.name}`, onclick: confirmThen(`Remove member ${m.name} from the cluster?`, async () => {
        await api("POST", `/clusters/${id}`, { shrink: [{ id: m.id }] });
        notice("The cluster is shrinking.");
      }) }, "Remove"),
    ]), "No members."),
  );
  fill(cluster);
  every(POLL_MS, async () => fill((await api("GET", `/clusters/${id}`)).cluster));
  const first = (cluster.instances || [])[0];
  const grow = onSubmit(
    h("form", { class: "actions", "aria-label": "Grow the cluster" }, field("Weight of the new member", h("input", { name: "weight", type: "number", min: 0, max: 1000, value: 100 })), h("button", { type: "submit", class: "secondary" }, "Add a member")),
    async (data) => {
      const item = { flavorRef: first ? first.flavor.id : "1", volume: { size: first && first.volume ? first.volume.size : 1 } };
      if (cluster.datastore.type === "postgresql") item.weight = Number(data.get("weight"));
      await api("POST", `/clusters/${id}`, { grow: [item] });
      notice("The cluster is growing.");
    },
  );
  const remove = h("button", { type: "button", class: "danger", onclick: confirmThen(`Delete cluster ${cluster.name} and every member?`, async () => {
    await api("DELETE", `/clusters/${id}`);
    go("#/clusters");
  }) }, "Delete cluster");
  return h("div", {}, h("h1", {}, `Cluster ${cluster.name}`), h("section", { class: "card" }, holder), h("section", { class: "card" }, h("h2", {}, "Actions"), h("div", { class: "actions" }, grow, remove)));
}

// -- configuration groups ----------------------------------------------------------------------

async function configurationsView() {
  const list = await all("/configurations", "configurations");
  const rows = list.map((g) => [h("a", { href: `#/configurations/${g.id}` }, g.name), `${g.datastore_name} ${g.datastore_version_name}`, g.description || ""]);
  return h("div", {}, h("h1", {}, "Configuration groups"), h("a", { class: "button", href: "#/configurations/new" }, "Create configuration group"), table("Configuration groups of the project", ["Name", "Datastore", "Description"], rows, "No configuration groups yet."));
}

async function createConfigurationView() {
  const datastores = await all("/datastores", "datastores");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "group-title" },
    field("Name", h("input", { name: "name", required: true })),
    field("Datastore", select("datastore", datastoreOptions(datastores))),
    field("Values", h("textarea", { name: "values", rows: 5, required: true }, '{"max_connections": 50}'), "A JSON object of parameters and values."),
    field("Description", h("input", { name: "description" })),
    h("button", { type: "submit" }, "Create group"),
  );
  onSubmit(form, async (data) => {
    let values;
    try {
      values = JSON.parse(String(data.get("values")));
    } catch (err) {
      throw new Error(`The values are not JSON: ${err.message}`);
    }
    const [type, version] = String(data.get("datastore")).split(":");
    const configuration = { name: data.get("name"), values, datastore: { type, version } };
    if (data.get("description")) configuration.description = data.get("description");
    const body = await api("POST", "/configurations", { configuration });
    go(`#/configurations/${body.configuration.id}`);
  });
  return h("div", {}, h("h1", { id: "group-title" }, "Create a configuration group"), form);
}

async function configurationView(id) {
  const group = (await api("GET", `/configurations/${id}`)).configuration;
  const attached = await all(`/configurations/${id}/instances`, "instances");
  const values = Object.entries(group.values || {}).map(([k, v]) => [k, String(v)]);
  const remove = h("button", { type: "button", class: "danger", onclick: confirmThen(`Delete configuration group ${group.name}?`, async () => {
    await api("DELETE", `/configurations/${id}`);
    go("#/configurations");
  }) }, "Delete group");
  return h(
    "div",
    {},
    h("h1", {}, `Configuration group ${group.name}`),
    h("section", { class: "card" }, fields([["Datastore", `${group.datastore_name} ${group.datastore_version_name}`], ["Description", group.description || ""]]), table("Values", ["Parameter", "Value"], values, "No values.")),
    h("section", { class: "card" }, h("h2", {}, "Attached to"), table("Instances using the group", ["Instance"], attached.map((i) => [h("a", { href: `#/instances/${i.id}` }, i.name)]), "No instance uses it."), remove),
  );
}

// -- start -------------------------------------------------------------------------------------

window.addEventListener("hashchange", render);
document.getElementById("logout").addEventListener("click", () => {
  const s = session.get();
  session.clear();
  if (s) fetch("/identity/v3/auth/tokens", { method: "DELETE", headers: { "X-Auth-Token": s.token, "X-Subject-Token": s.token } }).catch(() => {});
  go("#/login");
});
render();
