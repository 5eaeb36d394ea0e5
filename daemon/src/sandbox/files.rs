//! Per-pod files the containers will mount: resolv.conf, hostname, hosts,
//! and a /dev/shm tmpfs. Mounts go through [`crate::sandbox::files::mount_shm`]
//! and [`unmount`], the only OS calls here.

use crid_proto::cri;
use std::path::Path;

/// resolv.conf text from a DNSConfig; `None` means copy the host's.
pub fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Option<String> {
    let dns = dns?;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return None;
    }
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s += &format!("search {}\n", dns.searches.join(" "));
    }
    for server in &dns.servers {
        s += &format!("nameserver {server}\n");
    }
    if !dns.options.is_empty() {
        s += &format!("options {}\n", dns.options.join(" "));
    }
    Some(s)
}

/// /etc/hosts for a pod with its own network.
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        for ip in ips {
            s += &format!("{ip}\t{hostname}\n");
        }
    }
    s
}

/// Writes resolv.conf, hostname and hosts into `dir`.
pub fn write(
    dir: &Path,
    dns: Option<&cri::DnsConfig>,
    hostname: &str,
    ips: &[String],
) -> std::io::Result<()> {
    let resolv = match resolv_conf(dns) {
        Some(s) => s,
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(dir.join("resolv.conf"), resolv)?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.join("hosts"), hosts(hostname, ips))?;
    Ok(())
}

/// Mounts the pod's /dev/shm tmpfs at `dir/shm`.
pub fn mount_shm(dir: &Path, size: u64) -> std::io::Result<()> {
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm)?;
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={size}").as_str()),
    )?;
    Ok(())
}

/// Unmounts `p` if it is a mount point; not mounted or missing is fine.
pub fn unmount(p: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        assert_eq!(resolv_conf(None), None);
        assert_eq!(resolv_conf(Some(&cri::DnsConfig::default())), None);
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn hosts_names_the_pod() {
        let h = hosts("web", &["10.1.0.5".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.1.0.5\tweb\n"));
    }
}
