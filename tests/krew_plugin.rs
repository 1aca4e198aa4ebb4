//! `kubectl jit` installs through krew as users install it: the release
//! archive is built, `.krew.yaml` rendered for it (sha256 and all), and the
//! real krew installs it; kubectl then finds and runs the plugin.
mod support;

use std::process::Command;

#[test]
fn krew_installs_the_plugin_and_kubectl_runs_it() {
    let out = tempfile::tempdir().unwrap();
    let install = Command::new(support::repo_root().join("hack/krew.sh"))
        .args(["install", out.path().to_str().unwrap()])
        .env("KUBECTL_JIT_BIN", env!("CARGO_BIN_EXE_kubectl-jit"))
        .output()
        .expect("run hack/krew.sh");
    let log = String::from_utf8_lossy(&install.stderr);
    assert!(install.status.success(), "krew install failed:\n{log}");
    assert!(log.contains("Installed plugin: jit"), "{log}");
    let bin_dir = String::from_utf8(install.stdout).unwrap().trim().to_string();

    let kubectl_dir = support::kubectl_path().parent().unwrap().to_path_buf();
    let path = format!("{bin_dir}:{}:/usr/bin:/bin", kubectl_dir.display());
    let kubectl = |args: &[&str]| {
        let o = Command::new(support::kubectl_path()).args(args).env("PATH", &path).output().unwrap();
        assert!(o.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let plugins = kubectl(&["plugin", "list", "--name-only"]);
    assert!(plugins.lines().any(|l| l.trim() == "kubectl-jit"), "{plugins}");
    let help = kubectl(&["jit", "--help"]);
    for command in
        ["request", "get", "describe", "explain", "approve", "deny", "revoke", "extend", "whoami", "check", "inventory"]
    {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`kubectl jit --help` lacks {command}:\n{help}"
        );
    }
    assert!(kubectl(&["jit", "extend", "--help"]).contains("kubectl jit extend deploy-1 -n agents --by 15m"));

    // The manifest krew accepted names this archive by its checksum.
    let manifest = std::fs::read_to_string(out.path().join("jit.yaml")).unwrap();
    let archive = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .expect("archive");
    let sha = Command::new("sha256sum").arg(&archive).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert!(manifest.contains(&format!("sha256: {}", sha.split_whitespace().next().unwrap())), "{manifest}");
}
