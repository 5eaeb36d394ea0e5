//! A test's CNI network: bridge + host-local + portmap from /usr/lib/cni,
//! one bridge name and subnet per test (10.244.N.0/24; each test picks its own
//! N), host-local's dataDir under the test's directory, the bridge deleted on
//! drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A test's network: a CNI conflist in the crid's conf dir and a bridge that
/// is deleted on drop.
pub struct TestNet {
    n: u8,
    bridge: String,
    ipam_dir: PathBuf,
}

impl TestNet {
    /// Writes the conflist for network `n` (bridge `crid-t<n>`, 10.244.<n>.0/24,
    /// plus `extra_plugin` if given) into `config`'s CNI conf dir and points
    /// `config` at the plugins (`<test dir>/cni-bin`, then /usr/lib/cni).
    pub fn new(
        n: u8,
        config: &mut crid_common::config::Config,
        extra_plugin: Option<&str>,
    ) -> TestNet {
        let root = config.socket.parent().unwrap().to_path_buf();
        let bridge = format!("crid-t{n}");
        let ipam_dir = root.join("ipam");
        let mut plugins = vec![
            serde_json::json!({
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.244.{n}.0/24")}]],
                         "dataDir": ipam_dir}
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ];
        let bin_dir = root.join("cni-bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        if let Some(p) = extra_plugin {
            plugins.push(serde_json::json!({"type": p}));
        }
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": format!("crid-test-{n}"), "plugins": plugins});
        std::fs::create_dir_all(&config.cni.conf_dir).unwrap();
        std::fs::write(
            config.cni.conf_dir.join("10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        config.cni.bin_dirs = vec![bin_dir, PathBuf::from("/usr/lib/cni")];
        TestNet {
            n,
            bridge,
            ipam_dir,
        }
    }

    /// The bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.n, 1)
    }

    /// IPs host-local has handed out (one file per IP).
    pub fn allocations(&self) -> Vec<String> {
        let dir = self.ipam_dir.join(format!("crid-test-{}", self.n));
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `iptables-restore --noflush` input that deletes every nat rule whose
/// comment names CNI network `network` (portmap's `dnat name: "<network>"`
/// jumps) and flushes and deletes the per-container `CNI-DN-*` chains they
/// jump to. `save` is `iptables-save -t nat`'s output. None: nothing to do.
pub fn portmap_cleanup(save: &str, network: &str) -> Option<String> {
    let needle = format!("name: \\\"{network}\\\"");
    let mut script = String::from("*nat\n");
    let mut chains = Vec::new();
    for l in save
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(&needle))
    {
        script.push_str(&format!("-D {}\n", &l[3..]));
        if let Some(target) = l.split(" -j ").nth(1).map(str::trim) {
            if target.starts_with("CNI-DN-") && !chains.iter().any(|c| c == target) {
                chains.push(target.to_string());
            }
        }
    }
    if script.len() == "*nat\n".len() {
        return None;
    }
    for c in &chains {
        script.push_str(&format!("-F {c}\n-X {c}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

impl Drop for TestNet {
    /// Deletes the bridge, and whatever portmap rules of this network a
    /// failed test left (a passing test's CNI DEL removed them already).
    fn drop(&mut self) {
        let save = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if let Some(script) = portmap_cleanup(&save, &format!("crid-test-{}", self.n)) {
            use std::io::Write;
            if let Ok(mut child) = std::process::Command::new("iptables-restore")
                .arg("--noflush")
                .stdin(std::process::Stdio::piped())
                .spawn()
            {
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(script.as_bytes());
                }
                let _ = child.wait();
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn portmap_cleanup_deletes_only_this_networks_rules_and_chains() {
        let save = r#"*nat
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-aaa - [0:0]
:CNI-DN-bbb - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"crid-test-7\" id: \"x\"" -m multiport --dports 8080 -j CNI-DN-aaa
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"crid-test-70\" id: \"y\"" -m multiport --dports 8081 -j CNI-DN-bbb
-A CNI-DN-aaa -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.7.2:80
COMMIT
"#;
        let s = super::portmap_cleanup(save, "crid-test-7").unwrap();
        assert_eq!(
            s,
            "*nat\n-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"crid-test-7\\\" id: \\\"x\\\"\" -m multiport --dports 8080 -j CNI-DN-aaa\n-F CNI-DN-aaa\n-X CNI-DN-aaa\nCOMMIT\n"
        );
        assert!(super::portmap_cleanup(save, "crid-test-8").is_none());
    }
}
