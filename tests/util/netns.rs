//! Two network namespaces joined by a veth pair, made by the test and deleted on drop: `near` (where
//! udptee runs) and `far` (a remote host). Needs root and iproute2; [`Net::new`] says why it cannot.

use std::fs::File;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// near (10.204.N.1/30 on `near_dev`) <-veth-> far (10.204.N.2/30 on `far_dev`).
pub struct Net {
    pub near: String,
    pub far: String,
    pub near_dev: String,
    pub far_dev: String,
    pub near_ip: String,
    pub far_ip: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.near, &self.far] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs a command, returning its stderr on failure.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Builds the pair; `tag` (0-250) keeps the addresses of tests running at once apart.
    pub fn new(tag: u8) -> Result<Self, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("creating network namespaces needs root".into());
        }
        let id = std::process::id();
        let net = Self {
            near: format!("udptee-n{tag}-{id}"),
            far: format!("udptee-f{tag}-{id}"),
            near_dev: format!("un{tag}x{id}"),
            far_dev: format!("uf{tag}x{id}"),
            near_ip: format!("10.204.{tag}.1"),
            far_ip: format!("10.204.{tag}.2"),
        };
        let (near, far) = (net.near.as_str(), net.far.as_str());
        run(&["ip", "netns", "add", near])?;
        run(&["ip", "netns", "add", far])?;
        run(&[
            "ip",
            "link",
            "add",
            &net.near_dev,
            "netns",
            near,
            "type",
            "veth",
            "peer",
            "name",
            &net.far_dev,
            "netns",
            far,
        ])?;
        run(&["ip", "-n", near, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", far, "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "-n",
            near,
            "addr",
            "add",
            &format!("{}/30", net.near_ip),
            "dev",
            &net.near_dev,
        ])?;
        run(&[
            "ip",
            "-n",
            far,
            "addr",
            "add",
            &format!("{}/30", net.far_ip),
            "dev",
            &net.far_dev,
        ])?;
        run(&["ip", "-n", near, "link", "set", &net.near_dev, "up"])?;
        run(&["ip", "-n", far, "link", "set", &net.far_dev, "up"])?;
        Ok(net)
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["ip", "-n", ns];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A qdisc on near's veth egress (the path to far): `tc qdisc add dev DEV root ARGS...`.
    pub fn qdisc(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec![
            "tc",
            "-n",
            &self.near,
            "qdisc",
            "add",
            "dev",
            &self.near_dev,
            "root",
        ];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs `f` on a new thread inside namespace `ns` (setns moves only the calling thread; sockets
    /// keep the namespace they were made in).
    pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = ns.to_owned();
        std::thread::spawn(move || {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("the namespace exists");
            setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("the thread in the namespace")
    }
}
