//! `crds/` must be exactly what `kube-jit crds` prints for the current types.

#[test]
fn committed_crds_match_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/kube-jit.crds.yaml");
    let committed = std::fs::read_to_string(&path).expect("read crds/kube-jit.crds.yaml");
    let generated = kube_jit::api::crds_yaml().expect("render CRDs");
    assert!(
        committed == generated,
        "crds/ has drifted from the API types; regenerate with:\n    cargo run --bin kube-jit -- crds > crds/kube-jit.crds.yaml"
    );
}
