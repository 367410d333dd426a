//! The Debian package: scripts/package-deb.sh builds it from the test's own binaries, and the
//! package installed into a scratch root (`dpkg-deb -x`) holds the binaries, the disabled unit, the
//! configuration as a conffile, man pages and completions; the installed binary says its version,
//! checks the installed configuration, and `man -l` renders its page. lintian reports no error.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::{skip, skip_witness, skip_witness_part};

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build(out: &Path) -> Option<PathBuf> {
    let bins = Path::new(BIN).parent().unwrap();
    if !bins.join("udptee-loadgen").exists() {
        skip(
            "skipped: udptee-loadgen is not built beside udptee (cargo test --workspace builds it)",
        );
        return None;
    }
    let o = Command::new("scripts/package-deb.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("BIN_DIR", bins)
        .env("OUT", out)
        // The debug build's symbols are large; the dbgsym package is the release build's.
        .env("DBGSYM", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deb = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(deb.exists(), "{}", deb.display());
    Some(deb)
}

#[test]
fn the_package_installs_and_its_binary_runs() {
    if !have("dpkg-deb") || !have("dpkg-shlibdeps") {
        skip_witness("skipped: dpkg-deb and dpkg-shlibdeps (dpkg-dev) are not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("udptee-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let Some(deb) = build(&out) else { return };
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("udptee_0.") && name.ends_with(".deb"),
        "{name}"
    );

    let field = |f: &str| {
        let o = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "udptee");
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    let control = out.join("control");
    assert!(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(&control)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/udptee/udptee.toml"
    );

    let root = out.join("root");
    assert!(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .unwrap()
            .success()
    );
    for f in [
        "usr/bin/udptee",
        "usr/bin/udptee-loadgen",
        "lib/systemd/system/udptee.service",
        "etc/udptee/udptee.toml",
        "usr/share/man/man1/udptee.1.gz",
        "usr/share/man/man1/udptee-check.1.gz",
        "usr/share/man/man1/udptee-replay.1.gz",
        "usr/share/man/man1/udptee-tap.1.gz",
        "usr/share/man/man1/udptee-top.1.gz",
        "usr/share/man/man1/udptee-loadgen.1.gz",
        "usr/share/bash-completion/completions/udptee",
        "usr/share/zsh/vendor-completions/_udptee",
        "usr/share/fish/vendor_completions.d/udptee.fish",
        "usr/share/doc/udptee/copyright",
        "usr/share/doc/udptee/README.md.gz",
    ] {
        assert!(root.join(f).exists(), "{f} in the package");
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/udptee.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/udptee --config /etc/udptee/udptee.toml"),
        "{unit}"
    );
    assert!(unit.contains("DynamicUser=yes"));

    let bin = root.join("usr/bin/udptee");
    let v = Command::new(&bin).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&v.stdout);
    let lines: Vec<&str> = v.lines().collect();
    assert!(lines[0].starts_with("udptee 0."), "{v}");
    assert!(lines.iter().any(|l| l.starts_with("revision: ")), "{v}");
    assert!(lines.iter().any(|l| l.starts_with("fast path: ")), "{v}");
    assert!(
        lines.iter().any(|l| l.starts_with("io_uring: built in")),
        "{v}"
    );
    let check = Command::new(&bin)
        .args(["check", "--config"])
        .arg(root.join("etc/udptee/udptee.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    if have("man") {
        let page = Command::new("man")
            .env("MANWIDTH", "100")
            .args(["-P", "cat", "-l"])
            .arg(root.join("usr/share/man/man1/udptee.1.gz"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&page.stdout);
        assert!(
            page.status.success(),
            "{}",
            String::from_utf8_lossy(&page.stderr)
        );
        assert!(
            text.contains("--listen") && text.contains("--config"),
            "{text}"
        );
    } else {
        skip_witness_part("skipped the man page check: man is not installed");
    }

    if have("lintian") {
        let l = Command::new("lintian")
            .args([
                "--tag-display-limit",
                "0",
                "--suppress-tags",
                "no-manual-page",
            ])
            .arg(&deb)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&l.stdout);
        eprintln!("lintian:\n{report}");
        let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
        assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    } else {
        skip_witness_part("skipped lintian: not installed (.ci/packages.sh installs it)");
    }
    let _ = std::fs::remove_dir_all(&out);
}
