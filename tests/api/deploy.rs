//! deploy/ as a platform team would review it, checked over the rendered
//! production overlay (`kubectl kustomize`): the `restricted` Pod Security
//! Standard's fields on every pod and container, resources everywhere,
//! replicas left to the autoscaler with a floor of two, disruption budgets,
//! spread, a drain that fits the grace period, probes that mean what they
//! say, full `app.kubernetes.io/*` labels, a versioned and bounded
//! migration Job, egress only to named destinations, and a PostgreSQL
//! connection budget that holds at the autoscalers' ceilings mid-rollout.
//! The Dockerfile's base images are pinned and what it copies exists.
//!
//! Needs kubectl (its built-in kustomize); skipped without it unless
//! `PURPLE_REQUIRE_KUBECTL` is set, as `.ci/run` does.

use std::{collections::BTreeMap, path::Path, process::Command};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// PostgreSQL's default max_connections (100) less headroom for the
/// superuser reserve, administrators and monitoring (deploy/README.md).
const CONNECTION_BUDGET: u64 = 90;

fn rendered() -> Option<Vec<Value>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = match Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("deploy/overlays/production"))
        .output()
    {
        Ok(output) => output,
        Err(_) if std::env::var_os("PURPLE_REQUIRE_KUBECTL").is_none() => {
            eprintln!("kubectl not found: deploy/ not checked");
            return None;
        }
        Err(err) => panic!("kubectl: {err}"),
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    Some(
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).unwrap())
            .collect(),
    )
}

fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(value, |v, key| v.get(key).unwrap_or(&Value::Null))
}

fn text(value: &Value, path: &str) -> String {
    match get(value, path) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn list<'a>(value: &'a Value, path: &str) -> Vec<&'a Value> {
    get(value, path)
        .as_sequence()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn name(object: &Value) -> String {
    format!("{}/{}", text(object, "kind"), text(object, "metadata.name"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| text(o, "kind") == kind).collect()
}

/// The pod templates: Deployments' and the Job's.
fn pods(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter(|o| matches!(text(o, "kind").as_str(), "Deployment" | "Job"))
        .map(|o| (name(o), get(o, "spec.template.spec")))
        .collect()
}

fn config(objects: &[Value]) -> BTreeMap<String, String> {
    let map = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| text(c, "metadata.name") == "purple-config")
        .expect("purple-config");
    get(map, "data")
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn pods_meet_the_restricted_standard_with_resources_everywhere() {
    let Some(objects) = rendered() else { return };
    let namespace = of_kind(&objects, "Namespace")[0];
    // Label keys hold dots: read them from the mapping.
    let labels = get(namespace, "metadata.labels").as_mapping().unwrap();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .and_then(Value::as_str),
        Some("restricted")
    );
    let pods = pods(&objects);
    assert_eq!(pods.len(), 5, "four services and the migration Job");
    for (owner, pod) in pods {
        assert_eq!(
            text(pod, "automountServiceAccountToken"),
            "false",
            "{owner}"
        );
        assert_eq!(text(pod, "securityContext.runAsNonRoot"), "true", "{owner}");
        assert_eq!(
            text(pod, "securityContext.seccompProfile.type"),
            "RuntimeDefault",
            "{owner}"
        );
        for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(get(pod, forbidden).is_null(), "{owner}: {forbidden}");
        }
        for volume in list(pod, "volumes") {
            assert!(get(volume, "hostPath").is_null(), "{owner}: hostPath");
        }
        let containers: Vec<&Value> = list(pod, "containers")
            .into_iter()
            .chain(list(pod, "initContainers"))
            .collect();
        assert!(!containers.is_empty());
        for container in containers {
            let at = format!("{owner} {}", text(container, "name"));
            let security = get(container, "securityContext");
            assert_eq!(text(security, "allowPrivilegeEscalation"), "false", "{at}");
            assert_eq!(text(security, "readOnlyRootFilesystem"), "true", "{at}");
            assert_ne!(text(security, "privileged"), "true", "{at}");
            let dropped: Vec<String> = list(security, "capabilities.drop")
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect();
            assert_eq!(dropped, ["ALL"], "{at}");
            assert!(list(security, "capabilities.add").is_empty(), "{at}");
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !text(container, &format!("resources.{bound}.{resource}")).is_empty(),
                        "{at}: resources.{bound}.{resource}"
                    );
                }
            }
        }
    }
}

#[test]
fn replicas_are_the_autoscalers_with_budgets_spread_and_a_drain_that_fits() {
    let Some(objects) = rendered() else { return };
    let grace: u64 = config(&objects)["PURPLE_SHUTDOWN_GRACE_SECS"]
        .parse()
        .unwrap();
    let hpas = of_kind(&objects, "HorizontalPodAutoscaler");
    let pdbs = of_kind(&objects, "PodDisruptionBudget");
    let deployments = of_kind(&objects, "Deployment");
    assert_eq!(deployments.len(), 4);
    for deployment in deployments {
        let at = name(deployment);
        let deployment_name = text(deployment, "metadata.name");
        assert!(
            get(deployment, "spec.replicas").is_null(),
            "{at}: replicas belong to the HPA"
        );
        let hpa = hpas
            .iter()
            .find(|h| text(h, "spec.scaleTargetRef.name") == deployment_name)
            .unwrap_or_else(|| panic!("{at} has no HPA"));
        let floor: u64 = text(hpa, "spec.minReplicas").parse().unwrap();
        assert!(floor >= 2, "{at}: floor {floor}");
        let selector = get(deployment, "spec.selector.matchLabels");
        let pdb = pdbs
            .iter()
            .find(|p| get(p, "spec.selector.matchLabels") == selector)
            .unwrap_or_else(|| panic!("{at} has no PodDisruptionBudget"));
        assert_eq!(text(pdb, "spec.maxUnavailable"), "1", "{at}");
        let pod = get(deployment, "spec.template.spec");
        let keys: Vec<String> = list(pod, "topologySpreadConstraints")
            .iter()
            .map(|c| text(c, "topologyKey"))
            .collect();
        assert!(
            keys.contains(&"topology.kubernetes.io/zone".to_owned())
                && keys.contains(&"kubernetes.io/hostname".to_owned()),
            "{at}: {keys:?}"
        );
        let container = list(pod, "containers")[0];
        let pre_stop: u64 = text(container, "lifecycle.preStop.sleep.seconds")
            .parse()
            .unwrap_or_else(|_| panic!("{at}: a preStop pause"));
        let termination: u64 = text(pod, "terminationGracePeriodSeconds").parse().unwrap();
        // Endpoints drain, then in-flight requests, then telemetry flushes.
        assert!(termination > pre_stop + grace + 5, "{at}: {termination} s");
        assert_eq!(text(container, "readinessProbe.grpc.port"), "50051", "{at}");
        assert_eq!(
            text(container, "readinessProbe.grpc.service"),
            "",
            "{at}: readiness asks the overall status, which follows the database"
        );
        assert_eq!(
            text(container, "livenessProbe.grpc.service"),
            "liveness",
            "{at}"
        );
    }
}

#[test]
fn every_object_carries_the_recommended_labels() {
    let Some(objects) = rendered() else { return };
    for object in &objects {
        let labels = get(object, "metadata.labels")
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        for key in ["part-of", "managed-by", "version"]
            .into_iter()
            .chain((text(object, "kind") != "Namespace").then_some("name"))
        {
            let key = format!("app.kubernetes.io/{key}");
            assert!(
                labels.get(key.as_str()).is_some(),
                "{} lacks {key}",
                name(object)
            );
        }
    }
}

#[test]
fn the_migration_job_is_versioned_bounded_and_owner_only() {
    let Some(objects) = rendered() else { return };
    let jobs = of_kind(&objects, "Job");
    assert_eq!(jobs.len(), 1);
    let job = jobs[0];
    let version = get(job, "metadata.labels")
        .get("app.kubernetes.io/version")
        .and_then(Value::as_str)
        .expect("a version label")
        .to_owned();
    assert_eq!(
        text(job, "metadata.name"),
        format!("purple-migrate-{}", version.replace('.', "-")),
        "a Job per release"
    );
    for field in [
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "backoffLimit",
    ] {
        assert!(!text(job, &format!("spec.{field}")).is_empty(), "{field}");
    }
    assert_eq!(text(job, "spec.template.spec.restartPolicy"), "Never");
    for container in list(job, "spec.template.spec.containers") {
        let secrets: Vec<String> = list(container, "env")
            .iter()
            .map(|e| text(e, "valueFrom.secretKeyRef.name"))
            .filter(|s| !s.is_empty())
            .collect();
        assert!(
            !secrets.is_empty() && secrets.iter().all(|s| s.ends_with("-db-owner")),
            "the Job migrates with owner roles only: {secrets:?}"
        );
    }
    for deployment in of_kind(&objects, "Deployment") {
        let container = list(deployment, "spec.template.spec.containers")[0];
        assert!(
            list(container, "env")
                .iter()
                .all(|e| !text(e, "valueFrom.secretKeyRef.name").ends_with("-owner")),
            "{}: services never see an owner role",
            name(deployment)
        );
    }
    assert_eq!(config(&objects)["PURPLE_AUTO_MIGRATE"], "false");
}

#[test]
fn egress_goes_only_to_named_destinations() {
    let Some(objects) = rendered() else { return };
    let policies = of_kind(&objects, "NetworkPolicy");
    let deny = policies
        .iter()
        .find(|p| {
            get(p, "spec.podSelector")
                .as_mapping()
                .is_some_and(serde_yaml_ng::Mapping::is_empty)
        })
        .expect("a default deny");
    assert_eq!(list(deny, "spec.policyTypes").len(), 2);
    for policy in policies {
        for rule in list(policy, "spec.egress") {
            let at = name(policy);
            assert!(
                !list(rule, "to").is_empty(),
                "{at}: an egress rule without a destination"
            );
            assert!(
                !list(rule, "ports").is_empty(),
                "{at}: an egress rule without ports"
            );
            for to in list(rule, "to") {
                let cidr = text(to, "ipBlock.cidr");
                assert!(
                    cidr != "0.0.0.0/0" && cidr != "::/0",
                    "{at}: egress anywhere"
                );
            }
        }
    }
}

#[test]
fn the_connection_budget_holds_at_the_ceilings_during_a_rollout() {
    let Some(objects) = rendered() else { return };
    let pool: u64 = config(&objects)["PURPLE_DB_MAX_CONNECTIONS"]
        .parse()
        .unwrap();
    let hpas = of_kind(&objects, "HorizontalPodAutoscaler");
    let mut total = 0;
    for deployment in of_kind(&objects, "Deployment") {
        let deployment_name = text(deployment, "metadata.name");
        let ceiling: u64 = hpas
            .iter()
            .find(|h| text(h, "spec.scaleTargetRef.name") == deployment_name)
            .map(|h| text(h, "spec.maxReplicas").parse().unwrap())
            .unwrap();
        let surge: u64 = text(deployment, "spec.strategy.rollingUpdate.maxSurge")
            .parse()
            .unwrap_or(1);
        total += (ceiling + surge) * pool;
    }
    for job in of_kind(&objects, "Job") {
        for container in list(job, "spec.template.spec.containers") {
            let own = list(container, "env")
                .iter()
                .find(|e| text(e, "name") == "PURPLE_DB_MAX_CONNECTIONS")
                .map_or(pool, |e| text(e, "value").parse().unwrap());
            total += own;
        }
    }
    eprintln!("PostgreSQL connections at the ceilings mid-rollout: {total} of {CONNECTION_BUDGET}");
    assert!(total <= CONNECTION_BUDGET, "{total} connections");
}

#[test]
fn the_dockerfile_pins_its_bases_runs_non_root_and_copies_what_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            stages += 1;
            let image = from.split_whitespace().next().unwrap();
            assert!(
                image.contains("@sha256:"),
                "{image} is not pinned by digest"
            );
            let registry = image.split('/').next().unwrap();
            assert!(registry.contains('.'), "{image} is not fully qualified");
        }
        if let Some(copy) = line.strip_prefix("COPY ") {
            if copy.starts_with("--from") {
                continue;
            }
            let parts: Vec<&str> = copy.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                assert!(
                    root.join(source).exists(),
                    "COPY {source}: not in the repository"
                );
            }
        }
    }
    assert_eq!(stages, 2);
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
