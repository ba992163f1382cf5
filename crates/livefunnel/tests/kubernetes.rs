//! Static checks of the Kubernetes manifests under `deploy/kubernetes/` (there is no
//! cluster here): they parse, the kustomization names files that exist, every
//! `LIVEFUNNEL_*` variable is a configuration key (checked by the real loader), the
//! probes' paths and port are the ones `livefunnel run` serves (checked on the running
//! binary), the grace period outlasts the drain, the requests are docs/sizing.md's, and
//! every manifest validates against the Kubernetes 1.31 schemas (kubernetes-validate,
//! from PyPI, installed by `.ci/run`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_yaml::Value;

const VALIDATOR_ENV: &str = "TESTKIT_K8S_VALIDATE";

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The base's resources, by kind.
fn resources() -> Vec<(PathBuf, Value)> {
    let base = k8s_dir().join("base");
    let kustomization = yaml(&base.join("kustomization.yaml"));
    kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| {
            let path = base.join(r.as_str().expect("a file name"));
            let v = yaml(&path);
            (path, v)
        })
        .collect()
}

fn of_kind(kind: &str) -> Value {
    resources().into_iter().map(|(_, v)| v).find(|v| v["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

fn container() -> Value {
    of_kind("Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

fn env_names() -> Vec<String> {
    container()["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("LIVEFUNNEL_"))
        .collect()
}

#[test]
fn the_base_parses_and_names_what_it_holds() {
    let all = resources();
    let kinds: Vec<&str> = all.iter().map(|(_, v)| v["kind"].as_str().unwrap()).collect();
    for kind in ["Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"] {
        assert!(kinds.contains(&kind), "the base has no {kind}: {kinds:?}");
    }
    for (path, v) in &all {
        assert!(
            v["apiVersion"].as_str().is_some() && v["metadata"]["name"].as_str().is_some(),
            "{}",
            path.display()
        );
    }
    // The ConfigMap is generated from the config file beside the kustomization.
    let k = yaml(&k8s_dir().join("base/kustomization.yaml"));
    let files = k["configMapGenerator"][0]["files"].as_sequence().unwrap();
    for f in files {
        assert!(k8s_dir().join("base").join(f.as_str().unwrap()).is_file(), "{f:?}");
    }
    let d = of_kind("Deployment");
    let mounts = container()["volumeMounts"].clone();
    assert_eq!(mounts[0]["mountPath"], "/etc/livefunnel");
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        k["configMapGenerator"][0]["name"]
    );
    let c = container();
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args, ["run", "--config", "/etc/livefunnel/livefunnel.toml"]);
    // The Service, the PodDisruptionBudget and the ServiceMonitor select the Deployment's pods.
    let pod_labels = d["spec"]["template"]["metadata"]["labels"].as_mapping().unwrap().clone();
    let sm = yaml(&k8s_dir().join("components/service-monitor/servicemonitor.yaml"));
    for selector in [
        of_kind("Service")["spec"]["selector"].clone(),
        of_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].clone(),
        d["spec"]["selector"]["matchLabels"].clone(),
        sm["spec"]["selector"]["matchLabels"].clone(),
    ] {
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v), "selector {k:?}");
        }
    }
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
}

#[test]
fn every_livefunnel_variable_is_a_configuration_key() {
    let names = env_names();
    assert!(names.contains(&"LIVEFUNNEL_CLICKHOUSE__PASSWORD".to_owned()), "{names:?}");
    let config = k8s_dir().join("base/livefunnel.toml");
    let check = |extra: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livefunnel"));
        cmd.args(["check-config", "--config"]).arg(&config);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LIVEFUNNEL_")) {
            cmd.env_remove(k);
        }
        for n in &names {
            cmd.env(n, "a-secret-value");
        }
        if let Some(bogus) = extra {
            cmd.env(bogus, "1");
        }
        cmd.output().unwrap()
    };
    let out = check(None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("a-secret-value"), "a secret shows in check-config:\n{text}");
    assert!(text.contains("store = \"kafka\""), "the base uses the shared checkpoint store:\n{text}");
    // The same check refuses a variable that is not a key: it can fail.
    let out = check(Some("LIVEFUNNEL_CLICKHOUSE__PASWORD"));
    assert!(!out.status.success(), "a misspelt key is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("clickhouse.pasword"));
}

#[test]
fn the_probes_are_what_livefunnel_run_serves() {
    let c = container();
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(c["ports"][0]["name"], "metrics");
    // The port of the config file's http.listen.
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(k8s_dir().join("base/livefunnel.toml")).unwrap()).unwrap();
    let listen = config["http"]["listen"].as_str().unwrap();
    assert_eq!(listen, format!("0.0.0.0:{port}"), "listen on every interface of the pod");
    let mut paths = Vec::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "metrics", "{probe}");
        paths.push((probe, get["path"].as_str().unwrap().to_owned()));
    }
    assert_eq!(paths[2].1, "/readyz");
    // The binary itself, with the manifest's configuration, on a mock cluster and no
    // ClickHouse: alive at once, not ready (the sink is unreachable), and serving both.
    let mock = livefunnel_kafka::rdkafka::mocking::MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(TOPIC, 1, 1).unwrap();
    let addr = free_local_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let mut cmd = run_command(&k8s_dir().join("base/livefunnel.toml"), &log);
    cmd.env("LIVEFUNNEL_KAFKA__BROKERS", mock.bootstrap_servers())
        .env("LIVEFUNNEL_HTTP__LISTEN", addr.to_string())
        .env("LIVEFUNNEL_CLICKHOUSE__URL", format!("http://{}", free_local_addr()));
    let run = Run::spawn(cmd, addr, &log);
    let rt = runtime();
    rt.block_on(async {
        let started = Instant::now();
        let healthz = loop {
            if let Ok(r) = http_get(addr, &paths[0].1).await {
                break r;
            }
            if started.elapsed() > Duration::from_secs(60) {
                run.fail("livefunnel run never answered its liveness path");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(healthz.0, 200, "{}", healthz.1);
        assert_eq!(http_get(addr, &paths[1].1).await.unwrap().0, 200);
        let (code, body) = http_get(addr, &paths[2].1).await.unwrap();
        assert_eq!(code, 503, "not ready without ClickHouse: {body}");
        assert_eq!(http_get(addr, "/no-such-path").await.unwrap().0, 404, "a wrong path would show");
        // What a ServiceMonitor scrapes: the build and the process series too.
        let text = scrape(addr).await;
        let info = format!(
            "livefunnel_build_info{{git_sha=\"{}\",version=\"{}\"}} 1",
            livefunnel_pipeline::GIT_SHA,
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&info), "no {info} in the scrape");
        assert!(livefunnel_pipeline::GIT_SHA.len() == 12 || livefunnel_pipeline::GIT_SHA == "unknown");
        assert!(series_sum(&text, "process_resident_memory_bytes") > 0.0);
    });
    drop(run);
}

#[test]
fn the_grace_period_outlasts_the_drain_and_requests_follow_sizing() {
    let d = of_kind("Deployment");
    let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = (livefunnel_pipeline::DRAIN_LIMIT + livefunnel_pipeline::SINK_STOP_LIMIT).as_secs();
    assert!(grace >= drain + 10, "terminationGracePeriodSeconds {grace} s, a stop takes up to {drain} s");
    let r = &container()["resources"];
    let sizing = std::fs::read_to_string(repo_root().join("docs/sizing.md")).unwrap();
    assert!(sizing.contains("Give each 2 cores"), "docs/sizing.md no longer says 2 cores per instance");
    assert!(sizing.contains("4 GiB per instance"), "docs/sizing.md no longer says 4 GiB per instance");
    assert_eq!((r["requests"]["cpu"].as_str(), r["requests"]["memory"].as_str()), (Some("2"), Some("4Gi")));
    assert_eq!(r["limits"]["memory"].as_str(), Some("8Gi"), "twice the request: the sizing page's margin");
    let sc = &d["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(sc["runAsUser"].as_u64(), Some(10001), "the Dockerfile's livefunnel user");
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("--uid 10001"), "the Dockerfile's user changed");
}

/// The validator: `TESTKIT_K8S_VALIDATE`, set by `.ci/run` to its virtual environment's
/// `kubernetes-validate`. Missing, the test fails saying how to install it.
fn validator() -> PathBuf {
    let path = std::env::var_os(VALIDATOR_ENV).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{VALIDATOR_ENV} is not set: python3 -m venv ~/.cache/livefunnel-k8s && \
             ~/.cache/livefunnel-k8s/bin/pip install kubernetes-validate==1.31.0, then \
             {VALIDATOR_ENV}=~/.cache/livefunnel-k8s/bin/kubernetes-validate (.ci/run does both)"
        )
    });
    assert!(path.is_file(), "{VALIDATOR_ENV}={} is not a file", path.display());
    path
}

fn validate(validator: &Path, file: &Path) -> (bool, String) {
    let out = Command::new(validator).args(["--strict", "-k", "1.31.0"]).arg(file).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let validator = validator();
    for (path, _) in resources() {
        let (ok, text) = validate(&validator, &path);
        assert!(ok, "{}: {text}", path.display());
    }
    // It can fail: a misspelt field of the Deployment is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("deployment.yaml");
    let text = std::fs::read_to_string(k8s_dir().join("base/deployment.yaml")).unwrap();
    std::fs::write(&broken, text.replace("terminationGracePeriodSeconds", "terminationGracePeriodSecond"))
        .unwrap();
    let (ok, text) = validate(&validator, &broken);
    assert!(!ok, "a misspelt field passed:\n{text}");
}
