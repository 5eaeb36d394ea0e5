//! The upstream CRI validation suite (`critest`, cri-tools' `./cmd/critest`)
//! against crid, on a private node: the suite's images built here and pushed
//! to a loopback registry that crid's certs.d config makes the only server of
//! every registry (so no pull leaves the machine), a private containerd, crid
//! on its own socket and CNI network, critest run serially, its JSON report
//! summarised, and everything torn down. The critest binary is given; nothing
//! here builds it.
//!
//! The images stand in for the ones the specs name (`registry.k8s.io/
//! e2e-test-images/busybox:1.29-2`, `.../nginx:1.14-2`, `gcr.io/
//! k8s-staging-cri-tools/test-image-*`, ...) with the properties the specs
//! check: Debian's busybox (the dynamic build, whose shell execs programs
//! instead of running applets in-process, as upstream busybox does) with its
//! applets as hard links, `pgrep` and `ipcs` (not busybox applets on Debian),
//! a real nginx, image users and groups, tags that share or do not share an
//! image. Programs and their shared libraries are copied from this machine
//! (`ldd`), busybox and nginx from the Debian packages unpacked in `debroot`.

use crate::images::{push_index, Compression, Entry, Format, ImageBuilder, PushTarget};
use crate::net::TestNet;
use crate::{test_dir, BoxError, CridProcess, PrivateContainerd, Registry, RegistryOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The CNI network number (bridge `crid-t150`, 10.244.150.0/24) of the node.
const NET: u8 = 150;

/// PATH of every suite image.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Users of the suite's base image (those of upstream busybox).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";

/// Groups of the suite's base image.
const GROUP: &str = "root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
wheel:x:10:root
www-data:x:33:
users:x:100:
nogroup:x:65534:
";

/// A layer being assembled: files, their parent directories once each.
#[derive(Default)]
struct Layer {
    entries: Vec<Entry>,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl Layer {
    fn dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        if self.dirs.insert(path.to_string()) {
            self.entries.push(Entry::dir(path, mode));
        }
    }

    fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        if self.files.insert(path.to_string()) {
            self.entries.push(Entry::File {
                path: path.into(),
                data: data.into(),
                mode,
            });
        }
    }

    /// `host` as `path` in the image, with every shared library it loads at
    /// the path it has on this machine.
    fn program(&mut self, host: &Path, path: &str, mode: u32) -> Result<(), BoxError> {
        let data = std::fs::read(host).map_err(|e| format!("reading {}: {e}", host.display()))?;
        self.file(path, data, mode);
        for lib in shared_libraries(host)? {
            let data = std::fs::read(&lib).map_err(|e| format!("reading {lib}: {e}"))?;
            self.file(&lib, data, 0o755);
        }
        Ok(())
    }
}

/// The shared libraries (and loader) `ldd` lists for `program`.
fn shared_libraries(program: &Path) -> Result<Vec<String>, BoxError> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("ldd {}: {text}", program.display()).into());
    }
    parse_ldd(&text).map_err(|e| format!("ldd {}: {e}", program.display()).into())
}

/// Library paths in `ldd` output: `name => /path (addr)` or `/path (addr)`.
fn parse_ldd(text: &str) -> Result<Vec<String>, String> {
    let mut libs = vec![];
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(format!("missing library: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    Ok(libs)
}

/// The base layer of every suite image: Debian's dynamic busybox with a hard
/// link per applet in /bin, `pgrep` and `ipcs` from this machine, users and
/// groups.
fn base_layer(debroot: &Path) -> Result<Vec<Entry>, BoxError> {
    let busybox = debroot.join("bin/busybox");
    let mut l = Layer::default();
    for (d, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("var/run", 0o755),
        ("var/www", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("usr/local/bin", 0o755),
    ] {
        l.dir(d, mode);
    }
    l.program(&busybox, "bin/busybox", 0o755)?;
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("running {} --list: {e}", busybox.display()))?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" && !applet.contains('/') {
            l.entries.push(Entry::Hardlink {
                path: format!("bin/{applet}"),
                target: "bin/busybox".into(),
            });
        }
    }
    // Upstream busybox has both as applets; Debian's builds have neither.
    l.program(Path::new("/usr/bin/pgrep"), "usr/bin/pgrep", 0o755)?;
    l.program(Path::new("/usr/bin/ipcs"), "usr/bin/ipcs", 0o755)?;
    l.file("etc/passwd", PASSWD, 0o644);
    l.file("etc/group", GROUP, 0o644);
    Ok(l.entries)
}

/// nginx's configuration: one server on `port` for /usr/share/nginx/html.
fn nginx_conf(port: u16) -> String {
    format!(
        "user www-data;
worker_processes 1;
pid /var/run/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
    access_log /dev/stdout;
    server {{
        listen {port};
        location / {{ root /usr/share/nginx/html; index index.html; }}
    }}
}}
"
    )
}

/// A real nginx (Debian's) listening on `port`, `nginx -g 'daemon off;'`.
fn nginx_layer(debroot: &Path, port: u16) -> Result<Vec<Entry>, BoxError> {
    let mut l = Layer::default();
    l.program(&debroot.join("usr/sbin/nginx"), "usr/sbin/nginx", 0o755)?;
    l.file("etc/nginx/nginx.conf", nginx_conf(port), 0o644);
    l.file(
        "usr/share/nginx/html/index.html",
        "<html><body>crid critest nginx</body></html>\n",
        0o644,
    );
    for d in ["var/log/nginx", "var/lib/nginx", "var/cache/nginx"] {
        l.dir(d, 0o755);
    }
    Ok(l.entries)
}

/// The stand-in for Apache httpd: busybox httpd on port 80 that says `httpd`
/// in its log, as the multi-container spec checks.
const HTTPD_FOREGROUND: &str = "#!/bin/sh
# crid's critest stand-in for Apache httpd: busybox httpd on port 80.
echo \"httpd: serving /usr/local/apache2/htdocs on port 80\" >&2
httpd -f -p 80 -h /usr/local/apache2/htdocs &
server=$!
trap 'kill $server; exit 0' TERM INT
wait $server
";

/// The stand-in for the pause image: sleeps until told to stop.
const PAUSE: &str = "#!/bin/sh
# crid's critest stand-in for the pause image.
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
";

/// The stand-in for nonewprivs' `nnp`: prints the effective uid a setuid-root
/// program gets (coreutils `id`, setuid root, next to it).
const NNP: &str = "#!/bin/sh
# crid's critest stand-in for nonewprivs: a setuid-root program's euid.
echo \"Effective uid: $(/usr/local/bin/suid-id -u)\"
";

/// One image to push: repository path (the same under every registry name),
/// tags, whether as a one-platform index (upstream's manifest lists), and the
/// builder.
struct SuiteImage {
    repo: String,
    tags: Vec<&'static str>,
    index: bool,
    image: ImageBuilder,
}

/// Every image the validation specs pull, by repository path. The registry
/// part of their names does not matter: crid's certs.d `_default` sends
/// every registry to the one local registry.
fn suite_images(debroot: &Path) -> Result<Vec<SuiteImage>, BoxError> {
    let base = base_layer(debroot)?;
    let img = |extra: Vec<Entry>, f: &dyn Fn(&mut crate::images::ImageConfig)| {
        let mut b = ImageBuilder::new()
            .layer(base.clone(), Compression::Gzip)
            .with_config(|c| {
                c.env = vec![PATH_ENV.into()];
                c.cmd = Some(vec!["sh".into()]);
            });
        if !extra.is_empty() {
            b = b.layer(extra, Compression::Gzip);
        }
        b.with_config(f)
    };
    let e2e = |name: &str| format!("e2e-test-images/{name}");
    let cri = |name: &str| format!("k8s-staging-cri-tools/{name}");
    let plain = |repo: String, tags: Vec<&'static str>, image: ImageBuilder| SuiteImage {
        repo,
        tags,
        index: false,
        image,
    };
    let listed = |repo: String, tags: Vec<&'static str>, image: ImageBuilder| SuiteImage {
        repo,
        tags,
        index: true,
        image,
    };
    let nginx_cmd = |c: &mut crate::images::ImageConfig| {
        c.cmd = Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]);
    };
    let mut out = vec![
        listed(e2e("busybox"), vec!["1.29-2"], img(vec![], &|_| {})),
        listed(
            e2e("nginx"),
            vec!["1.14-2"],
            img(nginx_layer(debroot, 80)?, &nginx_cmd),
        ),
        plain(
            cri("hostnet-nginx-amd64"),
            vec!["latest"],
            img(nginx_layer(debroot, 12003)?, &nginx_cmd),
        ),
        listed(
            e2e("httpd"),
            vec!["2.4.39-4"],
            img(
                vec![
                    Entry::exe("usr/local/bin/httpd-foreground", HTTPD_FOREGROUND),
                    Entry::dir("usr/local/apache2", 0o755),
                    Entry::dir("usr/local/apache2/htdocs", 0o755),
                    Entry::file(
                        "usr/local/apache2/htdocs/index.html",
                        "<html><body>It works!</body></html>\n",
                    ),
                ],
                &|c| c.cmd = Some(vec!["httpd-foreground".into()]),
            ),
        ),
        listed(
            e2e("nonewprivs"),
            vec!["1.3"],
            img(nnp_layer()?, &|c| {
                c.entrypoint = Some(vec!["/usr/local/bin/nnp".into()]);
                c.cmd = None;
            }),
        ),
        listed(
            "pause".into(),
            vec!["3.9"],
            img(vec![Entry::exe("pause", PAUSE)], &|c| {
                c.entrypoint = Some(vec!["/pause".into()]);
                c.cmd = None;
            }),
        ),
    ];
    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
    ] {
        out.push(listed(
            cri(name),
            vec!["latest"],
            img(vec![], &|c| c.user = Some(user.into())),
        ));
    }
    // default-user (uid 1000) is in group-defined-in-image (gid 50000).
    out.push(listed(
        cri("test-image-predefined-group"),
        vec!["latest"],
        img(
            vec![
                Entry::file(
                    "etc/passwd",
                    format!("{PASSWD}default-user:x:1000:1000::/home/default-user:/bin/sh\n"),
                ),
                Entry::file(
                    "etc/group",
                    format!("{GROUP}default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"),
                ),
                Entry::dir("home/default-user", 0o755),
            ],
            &|c| c.user = Some("1000".into()),
        ),
    ));
    // Each is busybox plus an empty file named after it, so each differs.
    let marked = |file: &str| img(vec![Entry::file(file, "")], &|_| {});
    for name in [
        "test-image-1",
        "test-image-2",
        "test-image-3",
        "test-image-latest",
    ] {
        out.push(listed(cri(name), vec!["latest"], marked(name)));
    }
    out.push(listed(
        cri("test-image-tags"),
        vec!["1", "2", "3"],
        marked("same-image"),
    ));
    out.push(listed(cri("test-image-tag"), vec!["test"], marked("test")));
    out.push(listed(cri("test-image-tag"), vec!["all"], marked("all")));
    Ok(out)
}

fn nnp_layer() -> Result<Vec<Entry>, BoxError> {
    let mut l = Layer::default();
    l.program(Path::new("/usr/bin/id"), "usr/local/bin/suid-id", 0o4755)?;
    l.file("usr/local/bin/nnp", NNP, 0o755);
    Ok(l.entries)
}

/// Builds the suite's images and pushes them to `target`; returns
/// `repo:tag` of each.
pub fn push_suite_images(target: &PushTarget, debroot: &Path) -> Result<Vec<String>, BoxError> {
    let mut pushed = vec![];
    for si in suite_images(debroot)? {
        let built = si.image.build()?;
        if si.index {
            push_index(target, &si.repo, &si.tags, &[&built], Format::Docker)?;
        } else {
            built.push(target, &si.repo, &si.tags)?;
        }
        pushed.extend(si.tags.iter().map(|t| format!("{}:{t}", si.repo)));
    }
    Ok(pushed)
}

/// certs.d `hosts.toml` making `registry` (`127.0.0.1:PORT`) the server of
/// whatever registry uses it: no mirror, so nothing falls back upstream.
pub fn hosts_toml(registry: &str) -> String {
    format!("server = \"http://{registry}\"\n")
}

/// A spec the environment is expected to skip, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSkip {
    /// The full spec text, as ginkgo reports it.
    pub spec: String,
    /// Why it skips here.
    pub reason: String,
    /// The runner skips it itself (`--ginkgo.skip`): it needs something this
    /// environment cannot provide, and would fail rather than skip.
    pub not_run: bool,
}

/// Parses expected-skips.txt: `<spec text> | <reason>` per line, `#`
/// comments; a reason starting with `not run:` marks a spec to skip.
pub fn parse_expected_skips(text: &str) -> Result<Vec<ExpectedSkip>, String> {
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (spec, reason) = line
            .rsplit_once(" | ")
            .ok_or_else(|| format!("line {}: no \" | <reason>\": {line}", n + 1))?;
        let reason = reason.trim();
        out.push(ExpectedSkip {
            spec: spec.trim().to_string(),
            reason: reason.to_string(),
            not_run: reason.starts_with("not run:"),
        });
    }
    Ok(out)
}

/// `s` with regex metacharacters escaped (for `--ginkgo.skip`).
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// One spec's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecResult {
    /// Full spec text.
    pub spec: String,
    /// The gist of the failure or skip message (empty if none).
    pub message: String,
}

/// What a critest run reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Specs that passed.
    pub passed: usize,
    /// Specs (and suite nodes) that failed, panicked, timed out or were interrupted.
    pub failed: Vec<SpecResult>,
    /// Specs that skipped themselves.
    pub skipped: Vec<SpecResult>,
    /// Specs filtered out by `--ginkgo.focus` / `--ginkgo.skip` (not run).
    pub not_selected: Vec<SpecResult>,
}

/// The gist of a gomega failure message on one line: its first lines up to
/// the struct dump, `<type>:` prefixes and "Unexpected error:" dropped, at
/// most 300 characters.
fn summarise_message(msg: &str) -> String {
    let mut parts: Vec<&str> = vec![];
    for line in msg.lines().map(str::trim) {
        if line == "{" {
            break;
        }
        let line = match line.strip_prefix('<') {
            Some(rest) => rest.split_once(">:").map_or(rest, |(_, v)| v).trim(),
            None => line,
        };
        if line.is_empty() || line == "Unexpected error:" {
            continue;
        }
        parts.push(line);
        if parts.len() == 4 {
            break;
        }
    }
    let joined = parts.join(" | ");
    match joined.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &joined[..i]),
        None => joined,
    }
}

/// Summarises ginkgo's JSON report. critest's benchmarks (always filtered
/// out of a validation run) are left out.
pub fn parse_report(json: &str) -> Result<Summary, BoxError> {
    let reports: serde_json::Value = serde_json::from_str(json)?;
    let mut s = Summary::default();
    for report in reports.as_array().ok_or("report is not a JSON array")? {
        let specs = report["SpecReports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for spec in specs {
            let mut parts: Vec<String> = spec["ContainerHierarchyTexts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let node = spec["LeafNodeType"].as_str().unwrap_or("");
            let leaf = spec["LeafNodeText"].as_str().unwrap_or("");
            parts.push(if leaf.is_empty() { node } else { leaf }.to_string());
            let text = parts.join(" ");
            if text.contains("benchmark") {
                continue;
            }
            let message = summarise_message(spec["Failure"]["Message"].as_str().unwrap_or(""));
            let result = SpecResult {
                spec: text,
                message,
            };
            match spec["State"].as_str().unwrap_or("") {
                "passed" if node == "It" => s.passed += 1,
                "passed" => {}
                // No message: filtered out by --ginkgo.focus/skip, not run.
                "skipped" if result.message.is_empty() => s.not_selected.push(result),
                "skipped" | "pending" => s.skipped.push(result),
                _ => s.failed.push(result),
            }
        }
    }
    Ok(s)
}

/// How to run the suite.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The critest binary.
    pub critest: PathBuf,
    /// Where the Debian busybox and nginx packages are unpacked.
    pub debroot: PathBuf,
    /// expected-skips.txt.
    pub expected_skips: PathBuf,
    /// Where the report, critest's output and crid's log are kept.
    pub out_dir: PathBuf,
    /// Further critest arguments (e.g. `--ginkgo.focus=...`).
    pub extra_args: Vec<String>,
}

/// The outcome of [`run`].
#[derive(Debug)]
pub struct Outcome {
    /// The report's summary.
    pub summary: Summary,
    /// Skips not in expected-skips.txt.
    pub unexpected_skips: Vec<SpecResult>,
    /// What the clean-up had to remove that critest left (pods, host mounts).
    pub leftovers: Vec<String>,
}

impl Outcome {
    /// No failure and no unexpected skip.
    pub fn ok(&self) -> bool {
        self.summary.failed.is_empty() && self.unexpected_skips.is_empty()
    }
}

/// Mount points under /tmp whose last component starts with `test` (where
/// critest's volume specs mount), as in `/proc/self/mountinfo`.
fn critest_host_mounts() -> BTreeSet<PathBuf> {
    crate::mounts_under(Path::new("/tmp"))
        .into_iter()
        .filter(|m| {
            m.strip_prefix("/tmp")
                .ok()
                .and_then(|r| r.components().next())
                .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with("test"))
        })
        .collect()
}

/// Brings the node up, runs critest serially against crid, tears it all down.
pub async fn run(opts: &RunOptions) -> Result<Outcome, BoxError> {
    let expected = parse_expected_skips(
        &std::fs::read_to_string(&opts.expected_skips)
            .map_err(|e| format!("reading {}: {e}", opts.expected_skips.display()))?,
    )?;
    std::fs::create_dir_all(&opts.out_dir)?;
    let reg = Registry::start(RegistryOptions::default())?;
    let images = push_suite_images(&reg.target(), &opts.debroot)?;
    eprintln!(
        "critest: {} images pushed to {} (every registry name is served from it)",
        images.len(),
        reg.host()
    );
    let dir = test_dir();
    let ctrd = PrivateContainerd::start(&dir.path().join("containerd")).await?;
    let mut config = CridProcess::test_config(dir.path(), &ctrd.socket());
    config.log.level = "debug,h2=info,tower=info,hyper=info".into();
    config.registry.config_path = dir.path().join("certs.d");
    let default_hosts = config.registry.config_path.join("_default");
    std::fs::create_dir_all(&default_hosts)?;
    std::fs::write(default_hosts.join("hosts.toml"), hosts_toml(&reg.host()))?;
    // NRI on, so critest's NRI specs run (--nri-socket): its test plugins
    // connect to crid's socket. Their Synchronize hook blocks 2 s on
    // purpose, longer than NRI's default 2 s request timeout would allow.
    config.nri.enable = true;
    config.nri.socket_path = dir.path().join("nri.sock");
    config.nri.plugin_path = dir.path().join("nri-plugins");
    config.nri.plugin_config_path = dir.path().join("nri-conf");
    config.nri.plugin_request_timeout_ms = 5000;
    let net = TestNet::new(NET, &mut config, None);
    let mut crid = CridProcess::start(config).await?;
    let mounts_before = critest_host_mounts();

    let result = run_critest(opts, &crid, &expected).await;

    // Clean up whatever failed specs left: their pods (through crid, as a
    // kubelet would), then crid, containerd, network, registry, directory.
    let mut leftovers = vec![];
    if let Ok(mut c) = crid.clients().await {
        let pods = c
            .runtime
            .list_pod_sandbox(crid_proto::cri::ListPodSandboxRequest::default())
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        for p in pods {
            leftovers.push(format!("pod {} ({:?})", p.id, p.metadata.map(|m| m.name)));
            if let Err(e) = crate::workload::remove_pod(&mut c, &p.id).await {
                eprintln!("critest: removing pod {}: {e}", p.id);
            }
        }
    }
    crid.stop();
    let _ = std::fs::copy(&crid.log_path, opts.out_dir.join("crid.log"));
    crate::kill_leftover_pods(dir.path(), &crid.config.state_dir);
    for m in critest_host_mounts().difference(&mounts_before) {
        leftovers.push(format!("host mount {}", m.display()));
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    drop(net);
    drop(ctrd);
    drop(reg);
    drop(dir);

    let mut summary = result?;
    // The specs this runner skipped itself count as (expected) skips.
    let (not_run, rest): (Vec<_>, Vec<_>) = summary
        .not_selected
        .drain(..)
        .partition(|s| expected.iter().any(|e| e.not_run && e.spec == s.spec));
    summary.not_selected = rest;
    summary
        .skipped
        .extend(not_run.into_iter().map(|s| SpecResult {
            message: "not run by tests/critest/run.sh".into(),
            ..s
        }));
    // ginkgo randomises the order; sorted, two runs' results compare line by line.
    summary.failed.sort_by(|a, b| a.spec.cmp(&b.spec));
    summary.skipped.sort_by(|a, b| a.spec.cmp(&b.spec));
    let unexpected_skips = summary
        .skipped
        .iter()
        .filter(|s| !expected.iter().any(|e| e.spec == s.spec))
        .cloned()
        .collect();
    Ok(Outcome {
        summary,
        unexpected_skips,
        leftovers,
    })
}

/// Runs critest against `crid` and summarises its report.
async fn run_critest(
    opts: &RunOptions,
    crid: &CridProcess,
    expected: &[ExpectedSkip],
) -> Result<Summary, BoxError> {
    let endpoint = format!("unix://{}", crid.config.socket.display());
    let report = opts.out_dir.join("critest-report.json");
    let _ = std::fs::remove_file(&report);
    let log_path = opts.out_dir.join("critest.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = tokio::process::Command::new(&opts.critest);
    cmd.arg(format!("--runtime-endpoint={endpoint}"))
        .arg(format!("--image-endpoint={endpoint}"))
        .arg(format!(
            "--nri-socket={}",
            crid.config.nri.socket_path.display()
        ))
        // No --parallel: critest's default runs one spec at a time.
        .arg("--ginkgo.no-color")
        .arg("--ginkgo.timeout=3h")
        .arg(format!("--ginkgo.json-report={}", report.display()));
    for e in expected.iter().filter(|e| e.not_run) {
        cmd.arg(format!("--ginkgo.skip={}", regex_escape(&e.spec)));
    }
    cmd.args(&opts.extra_args)
        .current_dir(&opts.out_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    eprintln!(
        "critest: running {} against {endpoint} (output: {})",
        opts.critest.display(),
        log_path.display()
    );
    let started = Instant::now();
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("running {}: {e}", opts.critest.display()))?;
    eprintln!(
        "critest: exited {status} after {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    let json = std::fs::read_to_string(&report)
        .map_err(|e| format!("critest wrote no report ({e}); see {}", log_path.display()))?;
    parse_report(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn expected_skips_parse_with_reasons_and_not_run_marks() {
        let text = "# comment\n\n[k8s.io] A b | AppArmor: the kernel has none\n\
                    [k8s.io] Image Manager x [Conformance] | not run: digest\n";
        let e = parse_expected_skips(text).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].spec, "[k8s.io] A b");
        assert_eq!(e[0].reason, "AppArmor: the kernel has none");
        assert!(!e[0].not_run);
        assert!(e[1].not_run);
        assert!(parse_expected_skips("no reason here").is_err());
    }

    #[test]
    fn regex_escape_quotes_ginkgo_spec_text() {
        assert_eq!(
            regex_escape("[k8s.io] a (b) [Conformance]"),
            "\\[k8s\\.io\\] a \\(b\\) \\[Conformance\\]"
        );
    }

    #[test]
    fn report_is_summarised_by_state_without_benchmarks() {
        let json = r#"[{"SpecReports": [
          {"LeafNodeType": "BeforeSuite", "LeafNodeText": "", "State": "passed"},
          {"ContainerHierarchyTexts": ["[k8s.io] Pod", "ctx"], "LeafNodeType": "It",
           "LeafNodeText": "runs", "State": "passed"},
          {"ContainerHierarchyTexts": ["[k8s.io] Pod"], "LeafNodeType": "It",
           "LeafNodeText": "fails", "State": "failed",
           "Failure": {"Message": "\n  first line\nsecond"}},
          {"ContainerHierarchyTexts": ["[k8s.io] Pod"], "LeafNodeType": "It",
           "LeafNodeText": "times out", "State": "timedout", "Failure": {"Message": "slow"}},
          {"ContainerHierarchyTexts": ["[k8s.io] AppArmor"], "LeafNodeType": "It",
           "LeafNodeText": "x", "State": "skipped", "Failure": {"Message": "disabled"}},
          {"ContainerHierarchyTexts": ["[k8s.io] Image", "benchmark about y"],
           "LeafNodeType": "It", "LeafNodeText": "z", "State": "skipped"},
          {"ContainerHierarchyTexts": ["[k8s.io] Image"], "LeafNodeType": "It",
           "LeafNodeText": "digest", "State": "skipped"}
        ]}]"#;
        let s = parse_report(json).unwrap();
        assert_eq!(s.passed, 1);
        assert_eq!(
            s.failed,
            vec![
                SpecResult {
                    spec: "[k8s.io] Pod fails".into(),
                    message: "first line | second".into()
                },
                SpecResult {
                    spec: "[k8s.io] Pod times out".into(),
                    message: "slow".into()
                }
            ]
        );
        assert_eq!(
            s.skipped,
            vec![SpecResult {
                spec: "[k8s.io] AppArmor x".into(),
                message: "disabled".into()
            }]
        );
        assert_eq!(s.not_selected.len(), 1);
        assert_eq!(s.not_selected[0].spec, "[k8s.io] Image digest");
    }

    #[test]
    fn failure_messages_are_cut_to_their_gist() {
        let grpc = "failed to stop\nUnexpected error:\n    <*status.Error | 0x28>: \n    \
                    rpc error: code = NotFound desc = gone\n    {\n        s: {}\n    }";
        assert_eq!(
            summarise_message(grpc),
            "failed to stop | rpc error: code = NotFound desc = gone"
        );
        let eq = "Expected\n    <string>: a\nto equal\n    <string>: b\n";
        assert_eq!(summarise_message(eq), "Expected | a | to equal | b");
        assert_eq!(summarise_message(&"x".repeat(400)).len(), 303);
        assert_eq!(summarise_message(""), "");
    }

    #[test]
    fn hosts_toml_names_only_the_local_server() {
        assert_eq!(
            hosts_toml("127.0.0.1:5000"),
            "server = \"http://127.0.0.1:5000\"\n"
        );
    }
}
