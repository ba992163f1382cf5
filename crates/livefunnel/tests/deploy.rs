//! The deployment (`docker-compose.yml`, `.env`, `Dockerfile`, `deploy/**`), tested
//! without a Docker engine: every file parses, every name one file gives another
//! exists (services, ports, paths, datasource uids, recording rules, runbook
//! sections), Prometheus' and Alertmanager's own checkers accept the configuration
//! and the alert unit tests pass, and every metric name a dashboard or rule uses is
//! in the scrape of a running `livefunnel demo`, so a rename can never silently blank
//! a wall.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn s(v: &Yaml) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, found {v:?}"))
}

fn seq(v: &Yaml) -> &[Yaml] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn keys(v: &Yaml) -> Vec<String> {
    v.as_mapping().map(|m| m.keys().map(|k| s(k).to_owned()).collect()).unwrap_or_default()
}

const DASHBOARDS: [&str; 3] = ["agency-wall", "room-detail", "pipeline-health"];
const RULE_FILES: [&str; 3] = [
    "deploy/prometheus/rules/livefunnel-recording.yml",
    "deploy/prometheus/rules/livefunnel-room-alerts.yml",
    "deploy/prometheus/rules/livefunnel-pipeline-alerts.yml",
];

fn dashboard(name: &str) -> Json {
    let rel = format!("deploy/grafana/dashboards/{name}.json");
    serde_json::from_str(&read(&rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(d: &Json) -> Vec<&Json> {
    fn walk<'a>(ps: &'a Json, out: &mut Vec<&'a Json>) {
        for p in ps.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// The `.env` defaults: `KEY=VALUE` lines.
fn env_file() -> BTreeMap<String, String> {
    read(".env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Compose's `${VAR}` and `${VAR:-default}`, with the values of `.env`.
fn interpolate(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|e| start + e).expect("an unclosed ${ in the compose file");
        let inner = &rest[start + 2..end];
        let (var, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(env.get(var).map_or(default, String::as_str));
        rest = &rest[end + 1..];
    }
    out + rest
}

fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

/// `(host port, container port)` of a service's `ports`, resolved with `.env`. Every
/// port is published on 127.0.0.1 only.
fn published(service: &Yaml, env: &BTreeMap<String, String>) -> Vec<(u16, u16)> {
    seq(&service["ports"])
        .iter()
        .map(|p| {
            let resolved = interpolate(s(p), env);
            let parts: Vec<&str> = resolved.split(':').collect();
            let port = |x: &str| x.parse::<u16>().unwrap_or_else(|_| panic!("bad port in {resolved:?}"));
            assert_eq!(parts.len(), 3, "ports entries are 127.0.0.1:HOST:CONTAINER, got {resolved:?}");
            assert_eq!(parts[0], "127.0.0.1", "{resolved:?} is published beyond loopback");
            (port(parts[1]), port(parts[2]))
        })
        .collect()
}

/// Ports a service listens on inside the compose network (`expose` and the container
/// side of `ports`).
fn container_ports(service: &Yaml) -> BTreeSet<u16> {
    let env = env_file();
    let mut out: BTreeSet<u16> = published(service, &env).into_iter().map(|(_, c)| c).collect();
    for e in seq(&service["expose"]) {
        out.insert(
            e.as_str().map_or_else(|| e.as_u64().map(|n| n as u16), |t| t.parse().ok()).expect("a port"),
        );
    }
    out
}

/// Asserts `host:port` names a compose service listening on that port.
fn assert_service_port(addr: &str, what: &str) {
    let c = compose();
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{what}: {addr} has no port"));
    let port: u16 = port.parse().unwrap_or_else(|_| panic!("{what}: bad port in {addr}"));
    let service = &c["services"][host];
    assert!(service.is_mapping(), "{what}: {host} is not a compose service ({:?})", keys(&c["services"]));
    assert!(container_ports(service).contains(&port), "{what}: service {host} does not expose port {port}");
}

#[test]
fn every_yaml_file_parses() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                out.push(p);
            }
        }
    }
    let mut files = vec![root().join("docker-compose.yml")];
    walk(&root().join("deploy"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        serde_yaml::from_str::<Yaml>(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", f.display()));
    }
    for name in DASHBOARDS {
        assert!(dashboard(name)["panels"].as_array().is_some_and(|p| !p.is_empty()), "{name}");
    }
}

#[test]
fn compose_starts_every_service_in_order() {
    let c = compose();
    let services = keys(&c["services"]);
    for want in
        ["kafka", "kafka-init", "clickhouse", "livefunnel", "sim", "prometheus", "alertmanager", "grafana"]
    {
        assert!(services.contains(&want.to_owned()), "service {want} missing from {services:?}");
    }
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &services {
        let deps = &c["services"][name.as_str()]["depends_on"];
        assert!(
            deps.is_null() || deps.is_mapping(),
            "{name}: depends_on must name a condition for each service"
        );
        for dep in keys(deps) {
            assert!(services.contains(&dep), "{name} depends on {dep}, which is not a service");
            let condition = s(&deps[dep.as_str()]["condition"]);
            let target = &c["services"][dep.as_str()];
            match condition {
                "service_healthy" => {
                    assert!(
                        target["healthcheck"]["test"].is_sequence(),
                        "{name} waits for {dep} to be healthy"
                    )
                }
                // A one-shot job: it must not be restarted after it exits.
                "service_completed_successfully" => assert_eq!(s(&target["restart"]), "no", "{dep}"),
                other => panic!("{name} -> {dep}: condition {other} does not wait for readiness"),
            }
            dependents.entry(dep).or_default().push(name.clone());
        }
    }
    // Every long-running service something waits for has a healthcheck.
    for (dep, by) in &dependents {
        let target = &c["services"][dep.as_str()];
        if target["restart"].as_str() != Some("no") {
            assert!(
                target["healthcheck"]["test"].is_sequence(),
                "{dep} (needed by {by:?}) has no healthcheck"
            );
        }
    }
    assert!(dependents.contains_key("kafka-init") && dependents.contains_key("clickhouse"), "{dependents:?}");
}

#[test]
fn compose_images_are_pinned_and_paths_exist() {
    let c = compose();
    for name in keys(&c["services"]) {
        let svc = &c["services"][name.as_str()];
        let image = s(&svc["image"]);
        let (_, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{name}: image {image} has no tag"));
        assert!(
            tag != "latest" && tag.chars().any(|ch| ch.is_ascii_digit()),
            "{name}: {image} is not pinned"
        );
        for v in seq(&svc["volumes"]) {
            let src = s(v).split(':').next().unwrap();
            if src.starts_with("./") || src.starts_with('/') {
                assert!(root().join(src).exists(), "{name}: bind mount {src} does not exist");
            } else {
                assert!(
                    keys(&c["volumes"]).contains(&src.to_owned()),
                    "{name}: volume {src} is not declared"
                );
            }
        }
        if svc["build"].is_mapping() {
            let ctx = root().join(s(&svc["build"]["context"]));
            assert!(ctx.join(s(&svc["build"]["dockerfile"])).is_file(), "{name}: dockerfile missing");
        }
    }
    let dockerfile = read("Dockerfile");
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "the Dockerfile is multi-stage: {froms:?}");
    for f in &froms {
        let image = f.split_whitespace().nth(1).unwrap();
        let tag = image.rsplit_once(':').map_or("", |x| x.1);
        assert!(tag.chars().any(|ch| ch.is_ascii_digit()), "unpinned base image in {f}");
    }
    assert!(
        dockerfile.contains("cargo build --release --locked -p livefunnel"),
        "the image builds livefunnel"
    );
    assert!(dockerfile.contains("COPY --from=builder"), "the runtime stage copies only the binary");
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"), ".dockerignore must leave target/ out");
}

#[test]
fn host_ports_come_from_env_and_do_not_collide() {
    let (c, env) = (compose(), env_file());
    let mut seen: BTreeMap<u16, String> = BTreeMap::new();
    for name in keys(&c["services"]) {
        let svc = &c["services"][name.as_str()];
        for p in seq(&svc["ports"]) {
            let var = s(p).strip_prefix("127.0.0.1:${").and_then(|r| r.split([':', '}']).next());
            let var = var.unwrap_or_else(|| panic!("{name}: host port of {p:?} is not an .env variable"));
            assert!(env.contains_key(var), "{name}: {var} is not set in .env");
        }
        for (host, _) in published(svc, &env) {
            if let Some(other) = seen.insert(host, name.clone()) {
                panic!("host port {host} is published by both {other} and {name}");
            }
        }
    }
    assert!(seen.len() >= 6, "{seen:?}");
}

#[test]
fn prometheus_scrapes_services_that_exist_and_loads_rule_files() {
    let p = yaml("deploy/prometheus/prometheus.yml");
    let mut jobs = BTreeSet::new();
    for job in seq(&p["scrape_configs"]) {
        jobs.insert(s(&job["job_name"]).to_owned());
        for sc in seq(&job["static_configs"]) {
            for t in seq(&sc["targets"]) {
                if !s(t).starts_with("localhost:") {
                    assert_service_port(s(t), "prometheus scrape target");
                }
            }
        }
    }
    assert!(jobs.contains("livefunnel"), "the alert rules use up{{job=\"livefunnel\"}}: {jobs:?}");
    for am in seq(&p["alerting"]["alertmanagers"]) {
        for sc in seq(&am["static_configs"]) {
            for t in seq(&sc["targets"]) {
                assert_service_port(s(t), "alertmanager target");
            }
        }
    }
    // The livefunnel target is the port of http.listen, on every interface.
    let cfg: toml::Value = toml::from_str(&read("deploy/livefunnel/livefunnel.toml")).unwrap();
    let listen = cfg["http"]["listen"].as_str().unwrap();
    assert!(listen.starts_with("0.0.0.0:"), "inside a container, {listen} must listen on 0.0.0.0");
    let port = listen.rsplit_once(':').unwrap().1;
    let livefunnel_job =
        seq(&p["scrape_configs"]).iter().find(|j| s(&j["job_name"]) == "livefunnel").unwrap();
    assert_eq!(s(&seq(&livefunnel_job["static_configs"][0]["targets"])[0]), format!("livefunnel:{port}"));
    // rule_files are relative to prometheus.yml, so they resolve in the repository too.
    let mut matched = BTreeSet::new();
    for pattern in seq(&p["rule_files"]) {
        let dir = root().join("deploy/prometheus").join(s(pattern)).parent().unwrap().to_owned();
        let suffix = s(pattern).rsplit_once("*").map_or(".yml", |x| x.1).to_owned();
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(&suffix) {
                matched.insert(format!("deploy/prometheus/rules/{name}"));
            }
        }
    }
    assert_eq!(
        matched,
        RULE_FILES.iter().map(|f| f.to_string()).collect(),
        "rule files loaded by prometheus"
    );
}

#[test]
fn grafana_provisions_every_datasource_and_dashboard_it_uses() {
    let ds = yaml("deploy/grafana/provisioning/datasources/livefunnel.yml");
    let mut uids = BTreeMap::new();
    for d in seq(&ds["datasources"]) {
        uids.insert(s(&d["uid"]).to_owned(), s(&d["type"]).to_owned());
        match s(&d["type"]) {
            "prometheus" => {
                assert_service_port(s(&d["url"]).trim_start_matches("http://"), "grafana datasource")
            }
            "grafana-clickhouse-datasource" => {
                let addr =
                    format!("{}:{}", s(&d["jsonData"]["host"]), d["jsonData"]["port"].as_u64().unwrap());
                assert_service_port(&addr, "grafana clickhouse datasource");
            }
            other => panic!("unexpected datasource type {other}"),
        }
    }
    let c = compose();
    let grafana = &c["services"]["grafana"];
    let plugins = s(&grafana["environment"]["GF_INSTALL_PLUGINS"]);
    assert!(
        plugins.starts_with("grafana-clickhouse-datasource 4."),
        "the ClickHouse plugin v4 is installed: {plugins}"
    );
    // The provider reads the directory the dashboards are mounted at.
    let provider = yaml("deploy/grafana/provisioning/dashboards/livefunnel.yml");
    let path = s(&provider["providers"][0]["options"]["path"]);
    let mounts: Vec<&str> = seq(&grafana["volumes"]).iter().map(s).collect();
    assert!(mounts.contains(&format!("./deploy/grafana/dashboards:{path}:ro").as_str()), "{mounts:?}");
    let home = s(&grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]);
    let home = home.strip_prefix(path).expect("the home dashboard is a provisioned one");
    assert!(root().join("deploy/grafana/dashboards").join(home.trim_start_matches('/')).is_file(), "{home}");

    let mut dashboard_uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        assert!(dashboard_uids.insert(d["uid"].as_str().unwrap().to_owned()), "{name}: duplicate uid");
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let id = p["id"].as_u64().unwrap_or_else(|| panic!("{name}: a panel without id"));
            assert!(ids.insert(id), "{name}: panel id {id} is used twice");
        }
        // Every datasource reference anywhere in the dashboard is provisioned.
        fn refs<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
            match v {
                Json::Object(m) => {
                    if let Some(ds) = m.get("datasource").filter(|d| d.is_object()) {
                        out.push(ds);
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Json::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&d, &mut found);
        // Datasources are chosen through variables, whose defaults are provisioned.
        let vars: BTreeMap<String, &Json> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["type"] == "datasource")
            .map(|v| (format!("${{{}}}", v["name"].as_str().unwrap()), v))
            .collect();
        for r in found {
            let (mut uid, ty) = (r["uid"].as_str().unwrap(), r["type"].as_str().unwrap());
            if ty == "grafana" {
                continue;
            }
            assert!(uid.starts_with("${"), "{name}: datasource {uid} is not chosen through a variable");
            let var = vars.get(uid).unwrap_or_else(|| panic!("{name}: no datasource variable {uid}"));
            assert_eq!(var["query"], ty, "{name}: variable {uid} lists {} datasources", var["query"]);
            uid = var["current"]["value"].as_str().unwrap();
            assert_eq!(
                uids.get(uid).map(String::as_str),
                Some(ty),
                "{name}: datasource {uid} ({ty}) is not provisioned"
            );
        }
    }
}

/// The slugs of a markdown file's headings, as GitHub makes them for `#anchors`.
fn heading_slugs(md: &str) -> BTreeSet<String> {
    md.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let text = l.trim_start_matches('#').trim().to_lowercase();
            text.chars()
                .filter(|ch| ch.is_alphanumeric() || *ch == ' ' || *ch == '-' || *ch == '_')
                .map(|ch| if ch == ' ' { '-' } else { ch })
                .collect()
        })
        .collect()
}

/// How an annotation starts an absolute link: the public URL of livefunnel's HTTP
/// server, an external label of Prometheus (`deploy/prometheus/prometheus.yml`).
const PUBLIC_URL: &str = "{{ $externalLabels.public_url }}";
const ROOM_URL: &str = "{{ $externalLabels.public_url }}/rooms/{{ $labels.room_id | urlquery }}";

/// `(file, rule)` for every alerting rule.
fn alerts() -> Vec<(&'static str, Yaml)> {
    let mut out = Vec::new();
    for f in RULE_FILES {
        for g in seq(&yaml(f)["groups"]) {
            for r in seq(&g["rules"]) {
                if r["alert"].is_string() {
                    out.push((f, r.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn every_alert_is_labelled_tested_and_has_a_runbook_section() {
    let slugs = heading_slugs(&read("docs/runbook.md"));
    let tests =
        ["deploy/prometheus/tests/room-alerts.test.yml", "deploy/prometheus/tests/pipeline-alerts.test.yml"]
            .map(yaml);
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut quiet: BTreeSet<String> = BTreeSet::new();
    for file in &tests {
        for t in seq(&file["tests"]) {
            for a in seq(&t["alert_rule_test"]) {
                let name = s(&a["alertname"]).to_owned();
                if seq(&a["exp_alerts"]).is_empty() {
                    quiet.insert(name)
                } else {
                    firing.insert(name)
                };
            }
        }
    }
    let all = alerts();
    assert!(all.len() >= 10, "{} alerts", all.len());
    for (file, r) in &all {
        let name = s(&r["alert"]);
        for l in ["severity", "scope"] {
            assert!(r["labels"][l].is_string(), "{name}: label {l}");
        }
        for a in ["summary", "description", "runbook_url"] {
            assert!(r["annotations"][a].is_string(), "{name}: annotation {a}");
        }
        // Absolute links from the configured public URL: the runbook section as
        // livefunnel serves docs/runbook.md, and a room alert's room page.
        let anchor = s(&r["annotations"]["runbook_url"]).strip_prefix(&format!("{PUBLIC_URL}/runbook#"));
        let anchor =
            anchor.unwrap_or_else(|| panic!("{name}: runbook_url must be {PUBLIC_URL}/runbook#SECTION"));
        assert!(slugs.contains(anchor), "{name}: docs/runbook.md has no section #{anchor}");
        if s(&r["labels"]["scope"]) == "room" {
            assert_eq!(s(&r["annotations"]["room_url"]), ROOM_URL, "{name}: a link to the room's page");
        }
        assert!(r["for"].is_string(), "{name}: every alert waits a `for:` duration");
        assert!(
            firing.contains(name) && quiet.contains(name),
            "{name}: needs a firing and a quiet unit test"
        );
        if s(&r["labels"]["scope"]) == "room" {
            assert!(
                s(&r["expr"]).contains("on(org_id, room_id)"),
                "{name}: a room alert joins on org_id, room_id"
            );
        }
        // One `for:` line per alert, so a test at accelerated time can rewrite it.
        let text = read(file);
        let block = text.split("- alert: ").find(|b| b.starts_with(name)).unwrap();
        assert_eq!(block.matches("\n        for: ").count(), 1, "{name}: one `for:` line");
    }
}

/// A tool from the machine, or a panic saying how to install it.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} is not installed: `apt-get install -y {package}` (Debian), which .ci/run does")
    })
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

#[test]
fn promtool_accepts_the_config_the_rules_and_their_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let dir = root().join("deploy/prometheus");
    run_ok(Command::new(&promtool).current_dir(&dir).args(["check", "config", "prometheus.yml"]));
    run_ok(
        Command::new(&promtool)
            .current_dir(&dir)
            .arg("check")
            .arg("rules")
            .args(RULE_FILES.map(|f| root().join(f))),
    );
    let out = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "tests/room-alerts.test.yml",
        "tests/pipeline-alerts.test.yml",
    ]));
    assert_eq!(out.matches("SUCCESS").count(), 2, "{out}");
}

/// Every PromQL expression of the dashboards (panels and variables), as
/// `(dashboard, expression)`.
fn dashboard_promql() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let ds = if t["datasource"].is_object() { &t["datasource"] } else { &p["datasource"] };
                if ds["type"] == "prometheus" {
                    out.push((name.to_owned(), t["expr"].as_str().unwrap().to_owned()));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["datasource"]["type"] == "prometheus" {
                let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
                out.push((name.to_owned(), q.to_owned()));
            }
        }
    }
    out
}

/// Every PromQL expression of the rules, as `(file, expression)`.
fn rule_promql() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in RULE_FILES {
        for g in seq(&yaml(f)["groups"]) {
            for r in seq(&g["rules"]) {
                out.push((f.to_owned(), s(&r["expr"]).to_owned()));
            }
        }
    }
    out
}

/// Grafana's variables, replaced by values PromQL accepts.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__range", "1h")
        .replace("$sort_by", "1e12")
        .replace("$org_id", ".*")
        .replace("$room_id", "room-0001")
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let promtool = tool("promtool", "prometheus");
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let exprs = dashboard_promql();
    assert!(exprs.len() >= 40, "{} dashboard queries", exprs.len());
    for (i, (_, e)) in exprs.iter().enumerate() {
        if e.starts_with("label_values(") {
            continue;
        }
        let quoted = serde_json::to_string(&grafana_to_promql(e)).unwrap();
        rules.push_str(&format!("      - record: dashboard_query_{i}\n        expr: {quoted}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboards.yml");
    std::fs::write(&file, rules).unwrap();
    run_ok(Command::new(promtool).arg("check").arg("rules").arg(&file));
}

#[test]
fn amtool_accepts_the_config_and_routes_alerts_as_documented() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    let dir = root().join("deploy/alertmanager");
    let out = run_ok(Command::new(&amtool).current_dir(&dir).args(["check-config", "alertmanager.yml"]));
    assert!(out.contains("SUCCESS"), "{out}");
    for (labels, receivers) in [
        (
            &["scope=room", "severity=critical", "org_id=org-qianfan", "room_id=r1"][..],
            "agency-wecom-app,robot-org-qianfan",
        ),
        (&["scope=room", "severity=warning", "org_id=org-unknown", "room_id=r1"][..], "robot-default"),
        (
            &["scope=org", "severity=critical", "org_id=org-qianfan", "alertname=OrgOrdersStall"][..],
            "agency-wecom-app,robot-org-qianfan",
        ),
        (
            &["scope=org", "severity=warning", "org_id=org-xingmang", "alertname=OrgOrdersDrop"][..],
            "robot-org-xingmang",
        ),
        (&["scope=pipeline", "alertname=LivefunnelInstanceDown"][..], "platform-wecom"),
    ] {
        run_ok(
            Command::new(&amtool)
                .current_dir(&dir)
                .args(["config", "routes", "test", "--config.file=alertmanager.yml"])
                .arg(format!("--verify.receivers={receivers}"))
                .args(labels),
        );
    }
}

/// Names in a PromQL expression: metric names, recording rules (with `:`), functions
/// and label names; quoted strings left out.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut cur = String::new();
    while let Some(ch) = chars.next() {
        if ch == '"' || ch == '\'' {
            for c in chars.by_ref() {
                if c == ch {
                    break;
                }
            }
            continue;
        }
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            cur.push(ch);
            continue;
        }
        if !cur.is_empty() && !cur.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(cur.clone());
        }
        cur.clear();
    }
    if !cur.is_empty() && !cur.starts_with(|c: char| c.is_ascii_digit()) {
        out.push(cur);
    }
    out
}

/// `livefunnel_*` series names and recording-rule names used by dashboards and rules.
fn used_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut series, mut recorded) = (BTreeSet::new(), BTreeSet::new());
    for (_, e) in dashboard_promql().into_iter().chain(rule_promql()) {
        for id in identifiers(&e) {
            if id.contains(':') {
                recorded.insert(id);
            } else if id.starts_with("livefunnel_") {
                series.insert(id);
            }
        }
    }
    (series, recorded)
}

#[test]
fn every_recording_rule_used_is_defined() {
    let defined: BTreeSet<String> = RULE_FILES
        .iter()
        .flat_map(|f| seq(&yaml(f)["groups"]).to_vec())
        .flat_map(|g| seq(&g["rules"]).to_vec())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let (_, used) = used_names();
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<_> = used.difference(&defined).collect();
    assert!(missing.is_empty(), "used but not recorded by any rule: {missing:?}");
}

#[test]
fn the_stack_configuration_and_simulator_command_are_accepted_by_livefunnel() {
    let bin = env!("CARGO_BIN_EXE_livefunnel");
    let out = run_ok(
        Command::new(bin)
            .args(["check-config", "--config"])
            .arg(root().join("deploy/livefunnel/livefunnel.toml")),
    );
    for want in ["kafka:9092", "http://clickhouse:8123", "0.0.0.0:9464"] {
        assert!(out.contains(want), "check-config output lacks {want}:\n{out}");
    }
    // The sim service's arguments, with a file instead of Kafka and no pacing.
    let c = compose();
    let args: Vec<String> = seq(&c["services"]["sim"]["command"]).iter().map(|a| s(a).to_owned()).collect();
    assert_eq!(args.first().map(String::as_str), Some("sim"));
    let mut local = vec!["sim".to_owned()];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--realtime" => {}
            "--kafka-brokers" | "--topic" => {
                it.next();
            }
            _ => local.push(a.clone()),
        }
    }
    assert!(local.iter().filter(|a| *a == "--scenario").count() >= 2, "{args:?}");
    // Hundreds of MB: counted as they stream by, never stored.
    let mut child = Command::new(bin)
        .args(&local)
        .args(["--output", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting livefunnel sim");
    let (mut out, mut buf, mut lines) = (child.stdout.take().unwrap(), vec![0u8; 1 << 16], 0usize);
    loop {
        let n = out.read(&mut buf).expect("reading the simulator's output");
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "livefunnel {local:?} failed: {status}");
    assert!(lines > 100_000, "50 rooms for 3 h make a large stream, got {lines} lines");
}

/// A `livefunnel demo` child process, stopped (SIGINT, then killed) when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// GET /metrics over HTTP/1.0 (no chunked encoding): the series names present.
fn scrape(port: u16) -> Option<BTreeSet<String>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let body = body.split_once("\r\n\r\n")?.1;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
            .collect(),
    )
}

/// Polls the scrape until `want` is all there, `limit` passes or the demo exits;
/// returns what is missing.
fn wait_for_names(demo: &mut Demo, port: u16, want: &BTreeSet<String>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let have = scrape(port).unwrap_or_default();
        let missing: Vec<String> = want.difference(&have).cloned().collect();
        let exited = !matches!(demo.0.try_wait(), Ok(None));
        if missing.is_empty() || exited || Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_metric_name_used_exists_in_a_live_scrape() {
    let (series, _) = used_names();
    assert!(series.len() >= 30, "{series:?}");
    // Insert errors only appear once an insert failed: provoked below by stopping
    // ClickHouse for a moment.
    let errors = "livefunnel_clickhouse_insert_errors_total";
    assert!(series.contains(errors));
    let mut server = livefunnel_testkit::ClickHouseServer::spawn();
    let port = livefunnel_testkit::free_port();
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_livefunnel"))
        .args(["demo", "--rooms", "10", "--duration", "1h", "--warmup", "25m", "--partitions", "2"])
        .arg("--config")
        .arg(root().join("deploy/livefunnel/livefunnel.toml"))
        .args(["--clickhouse-url", &server.http_url(), "--http", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("demo.log")).unwrap())
        .spawn()
        .expect("starting livefunnel demo");
    let mut demo = Demo(child);
    let log = || std::fs::read_to_string(data.path().join("demo.log")).unwrap_or_default();
    let before: BTreeSet<String> = series.iter().filter(|n| *n != errors).cloned().collect();
    let missing = wait_for_names(&mut demo, port, &before, Duration::from_secs(240));
    assert!(matches!(demo.0.try_wait(), Ok(None)), "livefunnel demo exited early:\n{}", log());
    assert!(missing.is_empty(), "used by a dashboard or rule but not exported by livefunnel: {missing:?}");

    server.stop();
    let missing =
        wait_for_names(&mut demo, port, &BTreeSet::from([errors.to_owned()]), Duration::from_secs(120));
    server.start();
    assert!(missing.is_empty(), "no {errors} while ClickHouse was down:\n{}", log());
    drop(demo);
}

/// The stack is closed by default: ports on loopback (checked by `published`),
/// Grafana without anonymous viewers and reading ClickHouse as a read-only user, the
/// simulator opt-in, the wall behind a token.
#[test]
fn the_stack_is_closed_by_default() {
    let (c, env) = (compose(), env_file());
    for name in keys(&c["services"]) {
        published(&c["services"][name.as_str()], &env);
    }
    let grafana = &c["services"]["grafana"]["environment"];
    assert_eq!(
        interpolate(s(&grafana["GF_AUTH_ANONYMOUS_ENABLED"]), &env),
        "false",
        "anonymous Grafana is opt-in"
    );
    assert_eq!(
        interpolate(s(&grafana["GF_AUTH_ANONYMOUS_ENABLED"]), &BTreeMap::new()),
        "false",
        "also without .env"
    );
    assert_eq!(seq(&c["services"]["sim"]["profiles"]).iter().map(s).collect::<Vec<_>>(), ["sim"]);

    // Grafana reads as `grafana`, a readonly = 1 user of the livefunnel database only,
    // whose password both containers take from the same .env variable.
    let ds = yaml("deploy/grafana/provisioning/datasources/livefunnel.yml");
    let ch =
        seq(&ds["datasources"]).iter().find(|d| s(&d["type"]) == "grafana-clickhouse-datasource").unwrap();
    assert_eq!(s(&ch["jsonData"]["username"]), "grafana");
    let password_var = s(&ch["secureJsonData"]["password"]).trim_start_matches('$');
    let users = read("deploy/clickhouse/users.d/grafana.xml");
    let user =
        users.split("<grafana>").nth(1).and_then(|u| u.split("</grafana>").next()).expect("a user grafana");
    assert!(user.contains(&format!("<password from_env=\"{password_var}\"/>")), "{user}");
    assert!(user.contains("<profile>grafana_readonly</profile>"), "{user}");
    assert!(user.contains("<database>livefunnel</database>"), "{user}");
    let profile =
        users.split("<grafana_readonly>").nth(1).unwrap().split("</grafana_readonly>").next().unwrap();
    assert!(profile.contains("<readonly>1</readonly>"), "{profile}");
    let clickhouse = &c["services"]["clickhouse"];
    let mounts: Vec<&str> = seq(&clickhouse["volumes"]).iter().map(s).collect();
    assert!(
        mounts.contains(
            &"./deploy/clickhouse/users.d/grafana.xml:/etc/clickhouse-server/users.d/grafana.xml:ro"
        ),
        "{mounts:?}"
    );
    for service in [clickhouse, &c["services"]["grafana"]] {
        let v = s(&service["environment"][password_var]);
        assert!(v.starts_with(&format!("${{{password_var}")), "{password_var}: {v}");
    }
    assert!(env.contains_key(password_var), "{password_var} in .env");
    assert!(grafana["CLICKHOUSE_PASSWORD"].is_null(), "Grafana never gets the writer's password");
    let lf = read("deploy/livefunnel/livefunnel.toml");
    assert!(!lf.contains("user = \"grafana\""), "livefunnel writes as its own user");

    // The wall answers Docker's network only with a token.
    let token = s(&c["services"]["livefunnel"]["environment"]["LIVEFUNNEL_WALL__ADMIN_TOKEN"]);
    assert!(interpolate(token, &env).len() >= 16, "WALL_ADMIN_TOKEN in .env: {token}");

    // Alert links are absolute, from the public URL set in .env: Prometheus expands it
    // into the external label the annotations use, and drops the label from the alerts.
    let prometheus = &c["services"]["prometheus"];
    assert!(
        seq(&prometheus["command"]).iter().any(|a| s(a) == "--enable-feature=expand-external-labels"),
        "prometheus expands ${{LIVEFUNNEL_PUBLIC_URL}}"
    );
    let url = interpolate(s(&prometheus["environment"]["LIVEFUNNEL_PUBLIC_URL"]), &env);
    let port = &env["LIVEFUNNEL_HTTP_PORT"];
    assert_eq!(url, format!("http://127.0.0.1:{port}"), "the wall's address by default");
    let p = yaml("deploy/prometheus/prometheus.yml");
    assert_eq!(s(&p["global"]["external_labels"]["public_url"]), "${LIVEFUNNEL_PUBLIC_URL}");
    let dropped = seq(&p["alerting"]["alert_relabel_configs"])
        .iter()
        .any(|r| s(&r["action"]) == "labeldrop" && s(&r["regex"]) == "public_url");
    assert!(dropped, "public_url is for links, not a label of every alert");
    for test in ["room-alerts", "pipeline-alerts"] {
        let t = yaml(&format!("deploy/prometheus/tests/{test}.test.yml"));
        for g in seq(&t["tests"]) {
            let label = s(&g["external_labels"]["public_url"]);
            assert!(label.starts_with("https://"), "{test}: every group renders absolute links");
        }
    }

    // Walls show China's time; dashboards pick their datasources through variables.
    for name in ["agency-wall", "room-detail"] {
        assert_eq!(dashboard(name)["timezone"], "Asia/Shanghai", "{name}");
    }
}
