//! The shipped deployment files, checked by real tools where they are installed (.ci/packages.sh):
//! the DaemonSet against the Kubernetes schema (kubernetes-validate), the Dockerfile by a linter
//! (dockerfilelint), and the example config by `udptee check`.

mod util;

use std::path::Path;
use std::process::Command;

use util::skip_witness;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_daemonset_is_valid_kubernetes() {
    let manifest = root().join("dist/kubernetes/daemonset.yaml");
    let Ok(o) = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30"])
        .arg(&manifest)
        .output()
    else {
        skip_witness(
            "skipping: kubernetes-validate is not installed (pip install kubernetes-validate)",
        );
        return;
    };
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for kind in ["configmap/udptee", "daemonset/udptee"] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{kind} validated: {out}"
        );
    }
    let text = std::fs::read_to_string(&manifest).unwrap();
    for needed in [
        "/readyz",
        "/healthz",
        "8125",
        "protocol: UDP",
        "runAsNonRoot: true",
    ] {
        assert!(text.contains(needed), "the DaemonSet has {needed}");
    }
}

#[test]
fn the_dockerfile_passes_its_linter() {
    let tools = root().join("target/ci-tools/node_modules/.bin/dockerfilelint");
    let Ok(o) = Command::new(&tools)
        .arg(root().join("dist/Dockerfile"))
        .output()
    else {
        skip_witness(
            "skipping: dockerfilelint is not installed (.ci/packages.sh puts it in target/ci-tools)",
        );
        return;
    };
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_example_config_checks() {
    let o = Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["check", "--config"])
        .arg(root().join("dist/udptee.toml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
