//! Generated files must match what generates them: `crds/` is exactly what
//! `kube-jit crds` prints for the current types, and the chart includes
//! exactly `crds/` and speaks of the operator's version.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn committed_crds_match_the_types() {
    let committed = read("crds/kube-jit.crds.yaml");
    let generated = kube_jit::api::crds_yaml().expect("render CRDs");
    assert!(
        committed == generated,
        "crds/ has drifted from the API types; regenerate with:\n    cargo run --bin kube-jit -- crds > crds/kube-jit.crds.yaml"
    );
}

#[test]
fn chart_files_are_the_committed_crds_and_admission_policies() {
    for file in ["kube-jit.crds.yaml", "kube-jit.admission.yaml"] {
        assert!(
            read(&format!("charts/kube-jit/files/{file}")) == read(&format!("crds/{file}")),
            "charts/kube-jit/files/{file} differs from crds/{file}; copy it with:\n    hack/helm.sh generate"
        );
    }
}

#[test]
fn chart_app_version_is_the_operators() {
    let chart: serde_yaml::Value = serde_yaml::from_str(&read("charts/kube-jit/Chart.yaml")).expect("Chart.yaml");
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")), "charts/kube-jit/Chart.yaml appVersion");
}
