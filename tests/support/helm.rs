//! The chart as Helm renders it: `hack/helm.sh` builds helm from its pinned
//! Go module on first use (cached afterwards) and renders charts/kube-jit as
//! release `kube-jit` in `kube-jit-system`.

use std::process::Command;

use super::repo_root;

/// Runs `hack/helm.sh <args>` and returns its stdout; panics on failure.
pub fn helm_sh(args: &[&str]) -> String {
    let out = Command::new(repo_root().join("hack/helm.sh")).args(args).output().expect("run hack/helm.sh");
    assert!(out.status.success(), "hack/helm.sh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("helm output is UTF-8")
}

/// `helm template` of the chart with `args` (values flags) added.
pub fn template(args: &[&str]) -> String {
    helm_sh(&[&["template"], args].concat())
}

/// The non-empty YAML documents of a multi-document stream.
pub fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

/// Whether a rendered object is a Helm hook (created only around install,
/// upgrade or delete, not with the release).
pub fn is_hook(object: &serde_yaml::Value) -> bool {
    object["metadata"]["annotations"]["helm.sh/hook"].is_string()
}
