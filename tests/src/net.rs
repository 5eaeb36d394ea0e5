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

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
