//! Compiles the kernel fast path (bpf/fastpath.bpf.c) with clang when it is installed, and tells
//! the crate so with `cfg(udptee_fastpath)`. Without clang (or libbpf's headers) udptee still
//! builds: `--fast-path on` then refuses to start and says why, `auto` serves everything from user
//! space. `.ci/packages.sh` installs clang, libbpf-dev and bpftool.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    git_revision();
    println!("cargo::rustc-check-cfg=cfg(udptee_fastpath)");
    println!("cargo::rerun-if-changed=bpf/fastpath.bpf.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=UDPTEE_NO_FASTPATH");
    let why = match build() {
        Ok(()) => {
            println!("cargo::rustc-cfg=udptee_fastpath");
            return;
        }
        Err(why) => why,
    };
    // Build again once clang or libbpf's headers appear: a change in any directory on PATH (where
    // clang lands) or under /usr/include (libbpf's headers) reruns this script, so installing
    // them is enough.
    println!("cargo::rerun-if-env-changed=PATH");
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).filter(|d| d.is_absolute() && d.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    println!("cargo::rerun-if-changed=/usr/include");
    println!("cargo::rustc-env=UDPTEE_FASTPATH_MISSING={why}");
    println!("cargo::warning=building without the kernel fast path: {why}");
}

/// `UDPTEE_GIT_REV` for `--version`: the commit this is built from, when built from a checkout
/// (rebuilt when HEAD moves); unset otherwise (a crate tarball, a source package).
fn git_revision() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo::rustc-env=UDPTEE_GIT_REV={rev}");
    // HEAD names a branch whose ref moves with each commit: watch both (worktrees included).
    for path in ["HEAD", "packed-refs"]
        .into_iter()
        .filter_map(|p| git(&["rev-parse", "--git-path", p]))
        .chain(
            git(&["symbolic-ref", "-q", "HEAD"])
                .and_then(|r| git(&["rev-parse", "--git-path", &r])),
        )
    {
        println!("cargo::rerun-if-changed={path}");
    }
}

fn build() -> Result<(), String> {
    if std::env::var_os("UDPTEE_NO_FASTPATH").is_some() {
        return Err("UDPTEE_NO_FASTPATH was set at build time".into());
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return Err("the fast path is Linux-only".into());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // The arch directory holds <asm/types.h>, which the uapi headers include.
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        Ok(other) => return Err(format!("no BPF build set up for {other}")),
        Err(_) => return Err("no target arch".into()),
    };
    let obj = out.join("fastpath.bpf.o");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/fastpath.bpf.c", "-o"])
        .arg(&obj)
        .output();
    match result {
        Err(e) => Err(format!(
            "{clang} not found ({e}); install clang and libbpf-dev (Debian) and rebuild"
        )),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().next().unwrap_or("").to_owned();
            Err(format!(
                "{clang} failed to compile bpf/fastpath.bpf.c: {first} (libbpf-dev installed?)"
            ))
        }
        Ok(_) => Ok(()),
    }
}
